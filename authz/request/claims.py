"""Reading claims: paths into nested objects, scope and role lists, values as text.

Shared by the credential kinds (identity), the authorizer (conditions) and the responder
(identity headers), so every layer reads a claim the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from authz.policy.claims import MISSING, ClaimPath, claim

__all__ = ["MISSING", "claim", "collect", "scalar_text"]


def _values(value: Any) -> Iterable[str]:
    """Scopes and roles arrive as a space-delimited string or an array of strings. The
    delimiter is SP only (RFC 6749 3.3): `str.split()` would also split on NBSP, TAB or
    U+2028, so `"orders.x\\u00a0admin"` would grant `admin`."""
    if isinstance(value, str):
        return [v for v in value.split(" ") if v]
    if isinstance(value, list):
        return (v for v in value if isinstance(v, str))
    return ()


def collect(claims: Mapping[str, Any], paths: tuple[ClaimPath, ...]) -> tuple[str, ...]:
    """The distinct values at `paths`, in order (scopes from `scope` and `scp`, say)."""
    out: dict[str, None] = {}
    for path in paths:
        value = claim(claims, path)
        if value is not MISSING:
            out.update(dict.fromkeys(_values(value)))
    return tuple(out)


def scalar_text(value: Any) -> str | None:
    """A claim value as header text: JSON form for booleans and numbers."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return None
