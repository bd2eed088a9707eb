"""Third-party CRDs and API definitions the chart and the Istio examples are checked against.

Istio's CRDs (with their full OpenAPI schemas) and mesh-config protos ship in the Go module
``istio.io/api``; the Prometheus Operator's ServiceMonitor CRD in
``github.com/prometheus-operator/prometheus-operator``. Both are fetched once with
``go mod download`` (the same Go toolchain and module proxy :mod:`tests.support.testbin`
uses) into Go's module cache, and reused afterwards::

    docs = upstream_crds.istio_crds({"AuthorizationPolicy", "ServiceEntry"})
    control_plane.apply(docs)      # then dry-run the examples against the real schemas
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from tests.support import testbin

ISTIO_API = ("istio.io/api", "v1.31.4")
PROMETHEUS_OPERATOR = ("github.com/prometheus-operator/prometheus-operator", "v0.85.0")


@functools.cache
def module_dir(module: str, version: str) -> Path:
    """Download ``module@version`` (cached by Go) and return its source directory."""
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", "GOWORK": "off"}
    proc = subprocess.run(
        [testbin.go_command(), "mod", "download", "-json", f"{module}@{version}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    try:
        info = json.loads(proc.stdout)
    except ValueError:
        info = {}
    if proc.returncode != 0 or info.get("Error") or "Dir" not in info:
        raise RuntimeError(
            f"go mod download {module}@{version} failed: {info.get('Error') or proc.stderr[-2000:]}"
        )
    return Path(info["Dir"])


def _crds(path: Path, kinds: Iterable[str] | None) -> list[dict[str, Any]]:
    wanted = set(kinds) if kinds is not None else None
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    out = [
        d
        for d in docs
        if d.get("kind") == "CustomResourceDefinition"
        and (wanted is None or d["spec"]["names"]["kind"] in wanted)
    ]
    if wanted is not None:
        missing = wanted - {d["spec"]["names"]["kind"] for d in out}
        assert not missing, f"{path} has no CRD for {sorted(missing)}"
    return out


def istio_crds(kinds: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Istio's CRDs (``kubernetes/customresourcedefinitions.gen.yaml``), optionally only some
    kinds (``{"AuthorizationPolicy", "ServiceEntry"}``)."""
    return _crds(
        module_dir(*ISTIO_API) / "kubernetes" / "customresourcedefinitions.gen.yaml", kinds
    )


def _prometheus_operator_crd(plural: str, kind: str) -> dict[str, Any]:
    path = (
        module_dir(*PROMETHEUS_OPERATOR)
        / "example"
        / "prometheus-operator-crd"
        / f"monitoring.coreos.com_{plural}.yaml"
    )
    return _crds(path, {kind})[0]


def servicemonitor_crd() -> dict[str, Any]:
    return _prometheus_operator_crd("servicemonitors", "ServiceMonitor")


def prometheusrule_crd() -> dict[str, Any]:
    return _prometheus_operator_crd("prometheusrules", "PrometheusRule")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def mesh_config_fields(message: str) -> set[str]:
    """JSON (camelCase) field names of a message in Istio's mesh config proto
    (``mesh/v1alpha1/config.proto``), e.g. ``EnvoyExternalAuthorizationGrpcProvider``.
    Fields of nested messages are not included; members of a ``oneof`` are."""
    text = (module_dir(*ISTIO_API) / "mesh" / "v1alpha1" / "config.proto").read_text()
    text = re.sub(r"//[^\n]*", "", text)
    start = re.search(rf"\bmessage {message}\s*{{", text)
    assert start, f"no message {message} in Istio's config.proto"
    blocks: list[str] = []  # kinds of the blocks we are inside, below the message itself
    statement = ""
    fields: set[str] = set()
    for char in text[start.end() :]:
        if char == "{":
            blocks.append(statement.split(maxsplit=1)[0] if statement.split() else "")
            statement = ""
        elif char == "}":
            if not blocks:
                break
            blocks.pop()
            statement = ""
        elif char == ";":
            field = re.match(
                r"\s*(?:repeated\s+|optional\s+)?[\w.<>, ]+?\s+(\w+)\s*=\s*\d+", statement
            )
            if field and all(b == "oneof" for b in blocks):
                fields.add(_camel(field.group(1)))
            statement = ""
        else:
            statement += char
    return fields
