"""An introspection answer (RFC 7662 2.2), read strictly.

The body must be one JSON object without duplicate members, non-finite numbers or deep
nesting, with a boolean `active`: anything else is not an answer (AnswerError, a fault of
the endpoint: 503, never an allow). An active token whose registered members have the
wrong type (`exp` a string, `aud` a number) is an answer about a token we cannot accept:
`problem` says which member, and the request is refused as for a bad JWT claim (401).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_DEPTH = 32
# RFC 7662 2.2 members and their JSON types (aud: a string or an array of strings).
_STRINGS = ("scope", "client_id", "username", "token_type", "sub", "iss", "jti")
_DATES = ("exp", "iat", "nbf")


class AnswerError(ValueError):
    """The endpoint's body is not an introspection answer; the message never quotes it."""


@dataclass(slots=True, eq=False)
class Introspected:
    """What the issuer said about one token. `claims` is the whole answer (empty when the
    token is inactive); `expires_at` its `exp`. `memo` holds what the request path derived
    from it (its identity, per issuer object), so a cache hit derives nothing again."""

    active: bool
    claims: Mapping[str, Any] = field(default_factory=dict)
    expires_at: float | None = None
    problem: str | None = None
    memo: Any = None


INACTIVE = Introspected(False)


def decode(body: bytes) -> Any:
    """JSON without duplicate members or non-finite numbers, at most MAX_DEPTH deep."""
    try:
        document = json.loads(body, object_pairs_hook=_unique, parse_constant=_no_constant)
    except RecursionError:
        raise AnswerError("nested too deeply") from None
    except ValueError as exc:  # UnicodeDecodeError included
        raise AnswerError(_first_line(exc)) from None
    if _depth(document) > MAX_DEPTH:
        raise AnswerError(f"nested more than {MAX_DEPTH} deep")
    return document


def read(document: Any) -> Introspected:
    """An Introspected from a decoded answer; raises AnswerError when it is none."""
    if not isinstance(document, dict):
        raise AnswerError("the answer is not a JSON object")
    active = document.get("active")
    if not isinstance(active, bool):
        raise AnswerError("the answer has no boolean 'active'")
    if not active:
        return INACTIVE  # RFC 7662 2.2: nothing else of an inactive token is meaningful
    problem = _type_problem(document)
    if problem is not None:
        return Introspected(True, document, None, problem)
    exp = document.get("exp")
    return Introspected(True, document, float(exp) if exp is not None else None)


def _type_problem(document: Mapping[str, Any]) -> str | None:
    for name in _STRINGS:
        if name in document and not isinstance(document[name], str):
            return f"'{name}' is not a string"
    for name in _DATES:
        if name not in document:
            continue
        value = document[name]
        if type(value) is bool or not isinstance(value, int | float):
            return f"'{name}' is not a number"
        try:
            float(value)
        except OverflowError:
            return f"'{name}' is out of range"
    aud = document.get("aud", "")
    if not isinstance(aud, str) and not (
        isinstance(aud, list) and all(isinstance(a, str) for a in aud)
    ):
        return "'aud' is not a string or array of strings"
    return None


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate member {key[:32]!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def _depth(node: Any) -> int:
    """Nesting depth, iteratively (the answer is at most the fetch's size limit)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(node, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in item)
    return deepest


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
