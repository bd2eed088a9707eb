"""Run the real `helm` (built by :mod:`tests.support.testbin`) on the chart in charts/authz.

    from tests.support import helm
    docs = helm.template({"mode": "sidecar", "policies": {...}})   # parsed manifests
    result = helm.run("lint", str(helm.CHART), check=False)          # CompletedProcess

Helm gets throwaway config/cache/data directories, so nothing reads or writes ~/.config/helm
or a user's repositories, and no kubeconfig unless one is passed (``--kubeconfig``).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.support import testbin

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "authz"
RELEASE = "authz"
NAMESPACE = "authz-system"

Manifest = dict[str, Any]


class HelmError(RuntimeError):
    """helm exited non-zero; ``stderr`` holds its message."""

    def __init__(self, args: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr
        super().__init__(f"helm {' '.join(args)} exited {returncode}:\n{stderr.strip()}")


def binary() -> Path:
    return testbin.path("helm")


def run(
    *args: str, check: bool = True, timeout: float = 120.0, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``helm ARGS`` with isolated helm homes; raises :class:`HelmError` if ``check``."""
    with tempfile.TemporaryDirectory(prefix="authz-helm-") as home:
        full_env = {
            **os.environ,
            "HELM_CONFIG_HOME": f"{home}/config",
            "HELM_CACHE_HOME": f"{home}/cache",
            "HELM_DATA_HOME": f"{home}/data",
            "KUBECONFIG": f"{home}/no-kubeconfig",  # never a real cluster by accident
            **(env or {}),
        }
        proc = subprocess.run(
            [str(binary()), *args],
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
            check=False,
        )
    if check and proc.returncode != 0:
        raise HelmError(args, proc.returncode, proc.stdout, proc.stderr)
    return proc


def values_file(values: Mapping[str, Any], directory: Path | None = None) -> Path:
    """Write ``values`` as a YAML values file and return its path."""
    directory = directory or Path(tempfile.mkdtemp(prefix="authz-values-"))
    path = directory / "values.yaml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps(values)), sort_keys=False))
    return path


def template_text(
    values: Mapping[str, Any] | None = None,
    *,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    chart: Path = CHART,
    extra: Sequence[str] = (),
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    args = ["template", release, str(chart), "--namespace", namespace, *extra]
    with tempfile.TemporaryDirectory(prefix="authz-values-") as tmp:
        if values is not None:
            args += ["--values", str(values_file(values, Path(tmp)))]
        return run(*args, check=check)


def template(
    values: Mapping[str, Any] | None = None,
    *,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    extra: Sequence[str] = (),
) -> list[Manifest]:
    """``helm template`` parsed into manifests (empty documents dropped)."""
    out = template_text(values, release=release, namespace=namespace, extra=extra).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def find(docs: Sequence[Manifest], kind: str, name: str | None = None) -> Manifest:
    """The one document of ``kind`` (and ``name``); AssertionError listing kinds otherwise."""
    hits = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, got {len(hits)} in {kinds(docs)}"
    return hits[0]


def kinds(docs: Sequence[Manifest]) -> list[str]:
    return sorted(
        f"{d['kind']}/{d['metadata'].get('namespace', '-')}/{d['metadata']['name']}" for d in docs
    )
