"""Rules that can never match, found from the spec alone: what `authz lint` and the
admission webhook warn about (the policy is valid and serves; these rules are dead).

- a path or prefix with a query string or fragment: authz matches the path without them;
- a path that Envoy never forwards in that form (`//`, dot segments, `\\`, escapes it
  decodes or adds): authz matches the normalised path (authz.request.paths);
- an encoded `/` or `\\`: such requests are refused (400) before any rule is consulted;
- a `*` or `{` in a path prefix: prefixes are literal text, not globs.

Rules never reached (after a catch-all, or after a rule with the same match) are found when
the policy compiles (authz.policy.advice), so they are in its status and in lint's output too.

Host names with a port or a trailing dot are reported by the compiler (compile.host_problems).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from authz.request.paths import ENCODED_SLASH, normalize_path

_TEMPLATE = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*(?:=\*\*|=\*)?\}")


def never_matching(spec: Mapping[str, Any]) -> list[str]:
    """Warnings, `spec.rules[i]...: why`, for an AuthzPolicy spec that passed validation."""
    warnings: list[str] = []
    for i, rule in enumerate(spec.get("rules", ())):
        match = rule.get("match", {})
        where = f"spec.rules[{i}]"
        for j, path in enumerate(match.get("paths", ())):
            warnings += _path(path, f"{where}.match.paths[{j}]", glob=True)
        for j, prefix in enumerate(match.get("pathPrefixes", ())):
            warnings += _path(prefix, f"{where}.match.pathPrefixes[{j}]", glob=False)
    return warnings


def _path(path: str, where: str, *, glob: bool) -> list[str]:
    for mark, what in (("?", "a query string"), ("#", "a fragment")):
        if mark in path:
            return [
                f"{where}: {path!r} never matches: it has {what}, and rules match the path "
                f"without it: write {path.split(mark, 1)[0]!r}"
            ]
    if not glob and ("*" in path or "{" in path):
        return [
            f"{where}: {path!r} is a literal prefix, '*' and '{{' included: it matches only "
            "paths with those characters; use paths with a glob such as '/orders/**'"
        ]
    if ENCODED_SLASH.search(path):
        return [
            f"{where}: {path!r} never matches: requests with an encoded '/' or '\\' are refused "
            "(400 request_invalid) before rules are consulted"
        ]
    literal = _TEMPLATE.sub("x", path).replace("*", "x") if glob else path
    normal = normalize_path(literal)
    if normal == literal:
        return []
    if literal == path:
        return [
            f"{where}: {path!r} never matches: the proxy normalises such a path "
            f"(to {normal!r}) before authz sees it; write the normalised form"
        ]
    return [
        f"{where}: {path!r} never matches: the proxy normalises paths ('//', dot segments, "
        "escapes) before authz sees them, so no request path has this form"
    ]
