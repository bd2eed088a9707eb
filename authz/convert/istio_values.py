"""Istio's string matches (exact `abc`, prefix `abc*`, suffix `*abc`, presence `*`) turned
into what an authz field takes, or Untranslatable when there is no exact equivalent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

Form = Literal["exact", "prefix", "suffix", "presence"]


class Untranslatable(ValueError):
    """An Istio field or value authz cannot express exactly."""


def form(value: str) -> tuple[Form, str]:
    """The kind of Istio match and its literal part. A `*` anywhere else is literal in
    Istio, and has no exact equivalent in authz's globs."""
    if value == "*":
        return "presence", ""
    if value.endswith("*") and "*" not in value[:-1]:
        return "prefix", value[:-1]
    if value.startswith("*") and "*" not in value[1:]:
        return "suffix", value[1:]
    if "*" in value:
        raise Untranslatable(f"{value!r}: a '*' inside a value is literal in Istio")
    return "exact", value


def escape(text: str) -> str:
    """`text` as a literal in an RE2 pattern."""
    return "".join("\\" + c if c in ".^$*+?()[]{}|\\-" else c for c in text)


def regex_of(values: Sequence[str], *, non_empty: bool = True) -> str:
    """One RE2 pattern matching any of the Istio values (presence: a non-empty value)."""
    parts = []
    for value in values:
        kind, core = form(value)
        if kind == "presence":
            parts.append(".+" if non_empty else ".*")
        elif kind == "prefix":
            parts.append(escape(core) + ".*")
        elif kind == "suffix":
            parts.append(".*" + escape(core))
        else:
            parts.append(escape(core))
    return "|".join(parts) if len(parts) > 1 else parts[0]


def string_condition(values: Sequence[str]) -> dict[str, Any]:
    """A header or claim condition for Istio values: `in` when all are exact, `prefix` for
    a single prefix, else one regex."""
    kinds = [form(v) for v in values]
    if all(k == "exact" for k, _ in kinds):
        return {"in": [c for _, c in kinds]}
    if len(kinds) == 1 and kinds[0][0] == "prefix" and kinds[0][1]:
        return {"prefix": kinds[0][1]}
    return {"regex": regex_of(values)}


def _glob_literal(text: str, what: str) -> str:
    if any(c in text for c in "*{}"):
        raise Untranslatable(f"{text!r}: '*', '{{' and '}}' are literal in Istio {what}")
    return text


def principal(value: str) -> str:
    """An Istio principal (`cluster.local/ns/a/sa/b`, with globs) as an authz principal
    glob over the SPIFFE ID Envoy reports (`spiffe://cluster.local/ns/a/sa/b`)."""
    kind, core = form(value)
    core = _glob_literal(core, "principals")
    if kind == "presence":
        return "spiffe://**"
    if kind == "prefix":
        return f"spiffe://{core}**"
    if kind == "suffix":
        return f"spiffe://**{core}"
    return f"spiffe://{core}"


def namespace_principal(value: str) -> str:
    """An Istio namespace match as a principal glob: `spiffe://*/ns/<ns>/sa/*`."""
    kind, core = form(value)
    core = _glob_literal(core, "namespaces")
    if "/" in core:
        raise Untranslatable(f"{value!r}: a namespace has no '/'")
    segment = {"presence": "*", "prefix": f"{core}*", "suffix": f"*{core}"}.get(kind, core)
    return f"spiffe://*/ns/{segment}/sa/*"


def service_account_principal(value: str, namespace: str) -> str:
    """`ns/sa` or `sa` (the policy's namespace) as a principal glob; no wildcards."""
    ns, _, sa = value.rpartition("/")
    if "*" in value or not sa:
        raise Untranslatable(f"{value!r}: a service account is `namespace/name` or `name`")
    return f"spiffe://*/ns/{ns or namespace}/sa/{sa}"


def trust_domain_principal(value: str) -> str:
    kind, core = form(value)
    core = _glob_literal(core, "trust domains")
    if "/" in core:
        raise Untranslatable(f"{value!r}: a trust domain has no '/'")
    segment = {"presence": "*", "prefix": f"{core}*", "suffix": f"*{core}"}.get(kind, core)
    return f"spiffe://{segment}/**"


def host(value: str) -> str | None:
    """An Istio host as an authz host; None for `*` (every host)."""
    kind, core = form(value)
    if kind == "presence":
        return None
    if kind == "suffix" and core.startswith("."):
        return "*" + core.lower()
    if kind == "exact":
        return core.lower()
    raise Untranslatable(f"{value!r}: authz hosts are exact, `*.suffix` or `*`")


def path(value: str, field: Literal["paths", "notPaths"]) -> tuple[str, str] | None:
    """An Istio path as (authz field, value): exact and templates into `paths`, a prefix into
    `pathPrefixes` (a glob `prefix**` for notPaths, which has no prefix list), a suffix into
    a glob; None for `*` (every path)."""
    if "{" in value:
        return field, _template(value)
    kind, core = form(value)
    if kind == "presence":
        return None
    if any(c in core for c in "{}"):
        raise Untranslatable(f"{value!r}: '{{' and '}}' outside a template")
    if kind == "exact":
        if not core.startswith("/"):
            raise Untranslatable(f"{value!r}: not an absolute path")
        return field, core
    if kind == "prefix":
        if not core.startswith("/"):
            raise Untranslatable(f"{value!r}: not an absolute path prefix")
        return ("pathPrefixes", core) if field == "paths" else (field, core + "**")
    return field, "/**" + core  # `/**/x` ends in `/x`, `/**.png` in `.png`


def _template(value: str) -> str:
    """Istio's Envoy URI templates: `{*}` one segment, `{**}` the rest (last)."""
    segments = value.split("/")
    out = []
    for i, segment in enumerate(segments):
        if segment == "{*}":
            out.append(f"{{s{i}}}")
        elif segment == "{**}":
            out.append(f"{{rest{i}=**}}")
        elif any(c in segment for c in "{}*"):
            raise Untranslatable(f"{value!r}: not a path template authz can express")
        else:
            out.append(segment)
    if not value.startswith("/"):
        raise Untranslatable(f"{value!r}: not an absolute path")
    return "/".join(out)
