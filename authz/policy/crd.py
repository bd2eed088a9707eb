"""CustomResourceDefinitions generated from the policy schema, so files and CRDs cannot drift.

`python -m authz.policy.crd DIR` writes one YAML file per kind; `make manifests`
renders them into the chart and `manifests/`, and a test fails when they are stale.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

from authz.policy import schema

_CONDITION = {
    "type": "object",
    "description": "A metav1.Condition.",
    "required": ["type", "status", "lastTransitionTime", "reason", "message"],
    "properties": {
        "type": {"type": "string", "maxLength": 316},
        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
        "lastTransitionTime": {"type": "string", "format": "date-time"},
        "reason": {"type": "string", "maxLength": 1024},
        "message": {"type": "string", "maxLength": 32768},
    },
}

_KEYS_STATUS = {
    "type": "object",
    "description": "The issuer's verification keys as this authorizer sees them.",
    "properties": {
        "ready": {"type": "boolean", "description": "At least one key is loaded."},
        "kids": {"type": "array", "items": {"type": "string"}, "description": "Key ids loaded."},
        "count": {"type": "integer", "description": "Keys loaded."},
        "source": {"type": "string", "description": "Where the keys come from."},
        "lastRefresh": {"type": "string", "format": "date-time", "description": "Last success."},
        "lastAttempt": {"type": "string", "format": "date-time", "description": "Last fetch."},
        "nextRefresh": {"type": "string", "format": "date-time"},
        "lastError": {"type": "string", "description": "Why the last fetch failed."},
        "stale": {"type": "boolean", "description": "Serving keys whose refresh is failing."},
        "warnings": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Keys skipped and why.",
        },
    },
}


_ENTRIES_STATUS = {
    "type": "object",
    "description": "The list's entries as this authorizer serves them.",
    "properties": {
        "active": {"type": "integer", "description": "Entries that still refuse tokens."},
        "lapsed": {
            "type": "integer",
            "description": "Entries past the time any token they match could be valid: they "
            "refuse nothing and can be removed.",
        },
    },
}


def status_schema(kind: str) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "observedGeneration": {"type": "integer", "format": "int64"},
        "conditions": {
            "type": "array",
            "items": _CONDITION,
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    }
    if kind in schema.ISSUER_KINDS:
        properties["keys"] = _KEYS_STATUS
    if kind == schema.REVOCATION_KIND:
        properties["entries"] = _ENTRIES_STATUS
    return {
        "type": "object",
        "description": "What the authorizer made of this object.",
        "properties": properties,
    }


def _node(root: dict[str, Any], path: str) -> dict[str, Any]:
    """The schema node at a RULES path such as `spec.rules[].claims[]`."""
    node = root
    for part in path.split(".")[1:]:
        name, is_item = (part[:-2], True) if part.endswith("[]") else (part, False)
        node = node["properties"][name]
        if is_item:
            node = node["items"]
    return node


def spec_schema(kind: str) -> dict[str, Any]:
    """The kind's spec schema with the cross-field rules attached as CEL validations."""
    spec = copy.deepcopy(schema.SPECS[kind])
    families = schema.rule_families(kind, cluster=True)
    for rule_family, path, rule, message in schema.RULES:
        if rule_family in families:
            _node(spec, path).setdefault("x-kubernetes-validations", []).append(
                {"rule": rule, "message": message}
            )
    return spec


def _columns(kind: str) -> list[dict[str, Any]]:
    columns: list[dict[str, Any]] = [
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        },
        {
            "name": "Reason",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
            "priority": 1,
        },
    ]
    if kind in schema.ISSUER_KINDS:
        columns.insert(0, {"name": "Issuer", "type": "string", "jsonPath": ".spec.issuer"})
        columns.append({"name": "Keys", "type": "integer", "jsonPath": ".status.keys.count"})
    if kind == schema.REVOCATION_KIND:
        columns.append({"name": "Active", "type": "integer", "jsonPath": ".status.entries.active"})
    columns.append({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})
    return columns


def crd(kind: str) -> dict[str, Any]:
    plural, singular, short = schema.NAMES[kind]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{schema.GROUP}"},
        "spec": {
            "group": schema.GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": short,
                "categories": ["authz"],
            },
            "scope": "Cluster" if kind in schema.CLUSTER_SCOPED else "Namespaced",
            "versions": [
                {
                    "name": schema.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _columns(kind),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": schema.SPECS[kind]["description"],
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(kind),
                                "status": status_schema(kind),
                            },
                        }
                    },
                }
            ],
        },
    }


HEADER = "# Generated by `make manifests` from authz/policy/schema.py. Do not edit.\n"


def render(kind: str) -> str:
    return HEADER + yaml.safe_dump(crd(kind), sort_keys=False, width=100)


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind in schema.KINDS:
        path = directory / f"{schema.NAMES[kind][0]}.{schema.GROUP}.yaml"
        path.write_text(render(kind), encoding="utf-8")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write(Path(sys.argv[1])):
        print(written)
