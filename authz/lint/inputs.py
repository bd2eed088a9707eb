"""What `authz lint` reads: files, directories (every .yaml/.yml below, as `authz serve`
reads a policy directory), standard input (`-`), or the objects in a live cluster.

Each input becomes validated objects, per-object failures and per-file errors; nothing
stops at the first problem, so one run reports every error of every input.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from authz.policy.files import POLICY_SUFFIXES, documents
from authz.policy.validate import PolicyError, PolicyObject, validate_document

STDIN = "-"


class InputError(Exception):
    """An input that cannot be read at all (a usage problem, not a policy problem)."""


@dataclass
class Inputs:
    documents: list[tuple[str, Any]] = field(default_factory=list)  # (origin, parsed document)
    objects: list[PolicyObject] = field(default_factory=list)
    failures: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # files that do not parse
    file_errors: list[tuple[str, str]] = field(default_factory=list)  # (origin, message)
    notes: list[tuple[str, str]] = field(default_factory=list)  # warnings about the input
    _seen: dict[str, str] = field(default_factory=dict)

    def add(self, docs: Iterable[Any], origin: str) -> None:
        for doc in docs:
            try:
                obj = validate_document(doc, origin)
            except PolicyError as exc:
                if exc.key is None:
                    self.file_errors.append((origin, "; ".join(exc.problems)))
                elif exc.key in self._seen or exc.key in self.failures:
                    self._duplicate(exc.key, origin)
                else:
                    self.failures[exc.key] = (origin, exc.problems)
                continue
            if obj.key in self._seen or obj.key in self.failures:
                self._duplicate(obj.key, origin)
                continue
            self._seen[obj.key] = origin
            self.objects.append(obj)

    @property
    def errors(self) -> list[tuple[str, str]]:
        """Problems with the files themselves: unparsable, unnamed or duplicate documents."""
        return [*self.unreadable, *self.file_errors]

    def _duplicate(self, key: str, origin: str) -> None:
        first = self._seen.get(key) or self.failures[key][0]
        self.file_errors.append((origin, f"{key} is already defined in {first}; ignored"))


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(
            p
            for p in path.rglob("*")
            if p.suffix in POLICY_SUFFIXES
            and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
    return [path]


def read_paths(paths: Sequence[str]) -> Inputs:
    """Files, directories and `-`; raises InputError for a path that does not exist."""
    inputs = Inputs()
    for given in paths:
        if given == STDIN:
            _parse(inputs, sys.stdin.read(), "<stdin>")
            continue
        path = Path(given)
        if not path.exists():
            raise InputError(f"{given}: no such file or directory")
        for file in _files(path):
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                inputs.unreadable.append((str(file), f"cannot read: {exc}"))
                continue
            _parse(inputs, text, str(file))
    return inputs


def _parse(inputs: Inputs, text: str, origin: str) -> None:
    try:
        docs = documents(text)
    except yaml.YAMLError as exc:
        inputs.unreadable.append((origin, f"cannot parse: {' '.join(str(exc).split())}"))
        return
    inputs.documents.extend((origin, doc) for doc in docs)
    inputs.add(docs, origin)


def as_cluster_changes(
    files: Inputs, cluster: list[dict[str, Any]], read_secret: Any, read_configmap: Any
) -> Inputs:
    """The cluster's objects with the files applied over them, all validated as cluster
    objects (a file stands for a pending `kubectl apply`): tenancy rules, references read
    from the cluster. Findings about a file's object keep the file as origin."""
    from authz.policy import schema  # noqa: PLC0415
    from authz.policy.kube import validate_objects  # noqa: PLC0415

    raw: dict[str, dict[str, Any]] = {_cluster_key(o): o for o in cluster}
    origins: dict[str, str] = {}
    merged = Inputs(unreadable=list(files.unreadable))
    for origin, doc in files.documents:
        if not isinstance(doc, dict) or doc.get("kind") not in schema.KINDS:
            merged.add([doc], origin)  # reported as lint reports any file
            continue
        change = dict(doc)
        if change["kind"] not in schema.CLUSTER_SCOPED:
            found = change.get("metadata")
            change["metadata"] = {
                "namespace": "default",
                **(found if isinstance(found, dict) else {}),
            }
        key = _cluster_key(change)
        raw[key] = change
        origins[key] = origin
    objects, failures = validate_objects(raw.values(), read_secret, read_configmap)
    merged.objects += [replace(o, origin=origins.get(o.key, o.origin)) for o in objects]
    for key, (origin, problems) in failures.items():
        merged.failures[key] = (origins.get(key, origin), problems)
    return merged


def _cluster_key(obj: Mapping[str, Any]) -> str:
    from authz.policy import schema  # noqa: PLC0415

    found = obj.get("metadata")
    meta: Mapping[str, Any] = found if isinstance(found, dict) else {}
    kind = obj.get("kind", "")
    if kind in schema.CLUSTER_SCOPED:
        return f"{kind}/{meta.get('name')}"
    return f"{kind}/{meta.get('namespace')}/{meta.get('name')}"


@dataclass
class Cluster:
    """What a live cluster holds: its objects as listed, and how to read what they name."""

    items: list[dict[str, Any]]
    read_secret: Any
    read_configmap: Any
    notes: list[tuple[str, str]]


def read_cluster(kubeconfig: str | None, namespaces: Sequence[str] = ()) -> Cluster:
    """Every authz.io object the cluster holds (in `namespaces`, if given). Raises
    InputError when the API cannot be reached."""
    from kubernetes.client import CustomObjectsApi  # noqa: PLC0415  (cluster input only)
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415
    from kubernetes.config.config_exception import ConfigException  # noqa: PLC0415
    from urllib3.exceptions import HTTPError  # noqa: PLC0415

    from authz.policy import schema  # noqa: PLC0415
    from authz.policy.cluster import api_client  # noqa: PLC0415
    from authz.policy.kube import configmap_reader, secret_reader  # noqa: PLC0415

    try:
        api = api_client(kubeconfig)
    except (ConfigException, OSError) as exc:
        raise InputError(f"kubeconfig: {exc}") from None
    custom = CustomObjectsApi(api)
    raw: list[dict[str, Any]] = []
    notes: list[tuple[str, str]] = []
    for kind in schema.KINDS:
        plural = schema.NAMES[kind][0]
        scopes: list[str | None] = (
            [None] if kind in schema.CLUSTER_SCOPED or not namespaces else list(namespaces)
        )
        for namespace in scopes:
            try:
                if namespace is None:
                    listed = custom.list_cluster_custom_object(
                        schema.GROUP, schema.VERSION, plural, _request_timeout=30
                    )
                else:
                    listed = custom.list_namespaced_custom_object(
                        schema.GROUP, schema.VERSION, namespace, plural, _request_timeout=30
                    )
            except ApiException as exc:
                if exc.status == 404:
                    notes.append(("kubernetes", f"{kind}: the CRD is not installed (404); skipped"))
                    continue
                raise InputError(
                    f"kubernetes: listing {plural}: {exc.status} {exc.reason}"
                ) from None
            except (OSError, HTTPError) as exc:
                raise InputError(f"kubernetes: {exc}") from None
            raw.extend(listed.get("items", []))
    return Cluster(raw, secret_reader(api), configmap_reader(api), notes)
