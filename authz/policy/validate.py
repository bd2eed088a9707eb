"""Check one policy document against the schema and the cross-field rules.

Errors name the object and the field path (`spec.rules[0].match.methods[1]`),
so a user can fix a file without reading our code.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator

from authz.policy import schema

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class PolicyObject:
    """A validated document: kind, identity and spec, plus where it came from."""

    kind: str
    namespace: str | None
    name: str
    spec: Mapping[str, Any]
    origin: str
    generation: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """`Kind/namespace/name`, or `Kind/name` for cluster-scoped kinds."""
        if self.namespace is None:
            return f"{self.kind}/{self.name}"
        return f"{self.kind}/{self.namespace}/{self.name}"


class PolicyError(ValueError):
    """A document that cannot be used, with every problem found in it."""

    def __init__(self, origin: str, key: str | None, problems: list[str]) -> None:
        self.origin = origin
        self.key = key  # None when the document does not even say which object it is
        self.problems = problems
        super().__init__(f"{origin}: {key or '<unnamed document>'}: " + "; ".join(problems))


def _strict(node: Any) -> Any:
    """Reject unknown fields in files, as `kubectl apply` does with strict field validation."""
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if (
            out.get("type") == "object"
            and "properties" in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


_VALIDATORS = {
    kind: Draft202012Validator(_strict(copy.deepcopy(spec))) for kind, spec in schema.SPECS.items()
}


def _path(parts: Iterator[Any] | Any) -> str:
    out = "spec"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _exactly_one(obj: Mapping[str, Any], names: tuple[str, ...]) -> bool:
    return sum(1 for n in names if n in obj) == 1


def _cross_field(kind: str, spec: Mapping[str, Any]) -> list[str]:
    """The CEL rules of `schema.RULES`, in Python, with the same messages."""
    messages = {(k, p): m for k, p, _, m in schema.RULES}
    problems: list[str] = []
    if kind in schema.ISSUER_KINDS:
        if not _exactly_one(spec, ("jwks", "jwksFile")):
            problems.append(f"spec: {messages[('issuer', 'spec')]}")
        for i, source in enumerate(spec.get("tokenSources", [])):
            if not _exactly_one(source, ("header", "cookie", "query")):
                problems.append(
                    f"spec.tokenSources[{i}]: {messages[('issuer', 'spec.tokenSources[]')]}"
                )
        return problems
    targets = spec.get("targets", {})
    if not any(k in targets for k in ("hosts", "contextExtensions", "workloadSelector")):
        problems.append(f"spec.targets: {messages[('policy', 'spec.targets')]}")
    for i, rule in enumerate(spec.get("rules", [])):
        if rule.get("action", "requireToken") != "requireToken" and any(
            k in rule for k in ("requireScopes", "requireRoles", "claims")
        ):
            problems.append(f"spec.rules[{i}]: {messages[('policy', 'spec.rules[]')]}")
        for j, cond in enumerate(rule.get("claims", [])):
            if not _exactly_one(cond, ("equals", "in", "present", "regex")):
                problems.append(
                    f"spec.rules[{i}].claims[{j}]: {messages[('policy', 'spec.rules[].claims[]')]}"
                )
    return problems


def validate_document(doc: Any, origin: str) -> PolicyObject:
    """Turn one YAML/JSON document into a PolicyObject, or raise PolicyError naming every problem."""
    if not isinstance(doc, dict):
        raise PolicyError(origin, None, ["a policy document must be a mapping"])
    kind = doc.get("kind")
    raw_meta = doc.get("metadata")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    name = meta.get("name")
    namespace = None if kind in schema.CLUSTER_SCOPED else meta.get("namespace", "default")
    key: str | None = None
    if kind in schema.KINDS and isinstance(name, str) and isinstance(namespace, (str, type(None))):
        key = f"{kind}/{namespace}/{name}" if namespace else f"{kind}/{name}"
    problems: list[str] = []
    if doc.get("apiVersion") != schema.API_VERSION:
        problems.append(f"apiVersion: must be {schema.API_VERSION}, got {doc.get('apiVersion')!r}")
    if kind not in schema.KINDS:
        problems.append(f"kind: must be one of {', '.join(schema.KINDS)}, got {kind!r}")
    if not isinstance(name, str) or not _NAME.match(name):
        problems.append(
            "metadata.name: must be a DNS subdomain name (lower case, digits, '-', '.')"
        )
    if namespace is not None and (not isinstance(namespace, str) or not _NAME.match(namespace)):
        problems.append("metadata.namespace: must be a DNS label")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        problems.append("spec: required, must be a mapping")
    if problems or not isinstance(spec, dict):
        raise PolicyError(origin, key, problems)
    assert isinstance(kind, str) and isinstance(name, str)
    for error in sorted(_VALIDATORS[kind].iter_errors(spec), key=lambda e: list(e.absolute_path)):
        problems.append(f"{_path(error.absolute_path)}: {_message(error)}")
    if not problems:
        problems.extend(_cross_field(kind, spec))
    if problems:
        raise PolicyError(origin, key, problems)
    labels = meta.get("labels")
    generation = meta.get("generation")
    return PolicyObject(
        kind,
        namespace,
        name,
        spec,
        origin,
        generation if isinstance(generation, int) else 0,
        labels if isinstance(labels, dict) else {},
    )


def _message(error: Any) -> str:
    """jsonschema messages echo whole values; keep them short and say what is expected."""
    validator = error.validator
    if validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        return f"unknown field(s) {', '.join(extra)}; allowed: {allowed}"
    if validator == "enum":
        return f"{error.instance!r} is not one of {', '.join(map(str, error.validator_value))}"
    if validator == "type":
        return f"must be of type {error.validator_value}, got {type(error.instance).__name__}"
    if validator == "required":
        return str(error.message).replace("is a required property", "is required")
    return str(error.message)
