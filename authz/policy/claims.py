"""Claim conditions compiled for the request path: typed comparisons of JSON values.

A claim value compares with its JSON type: `true` never equals `"true"` and `1` never
equals `"1"`, so a Firebase custom claim `admin: "true"` does not satisfy `equals: true`
(issue 12). Numbers compare by value (`1` equals `1.0`); booleans are not numbers.
Reading a claim path is here too, so the issuer's token checks, the rules and the
identity headers read a claim the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from authz.policy.patterns import LinearPattern

ClaimPath = tuple[str, ...]
MISSING: Any = object()

Op = Literal["equals", "in", "present", "regex", "contains", "range", "maxAge"]
# A JSON value as a hashable key that keeps its type: ("string", "1") != ("number", 1).
TypedKey = tuple[str, Any]


def claim(claims: Mapping[str, Any], path: ClaimPath) -> Any:
    """The value at a claim path, or MISSING."""
    value: Any = claims
    for name in path:
        if not isinstance(value, dict):
            return MISSING
        value = value.get(name, MISSING)
        if value is MISSING:
            return MISSING
    return value


def typed_key(value: Any) -> TypedKey:
    """`value` as a key that equals another only for the same JSON value of the same type."""
    if isinstance(value, bool):
        return ("boolean", value)
    if isinstance(value, int | float):
        return ("number", value)  # 1 == 1.0 and hash(1) == hash(1.0): JSON numbers compare so
    if isinstance(value, str):
        return ("string", value)
    if value is None:
        return ("null", None)
    return ("json", json.dumps(value, sort_keys=True, separators=(",", ":")))


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class ClaimCondition:
    """One claim check. On an array claim, `equals`, `in`, `regex`, the number range and
    `maxAgeSeconds` hold when the array itself or any element satisfies them; `contains`
    needs an array with such an element."""

    path: ClaimPath
    op: Op
    values: frozenset[TypedKey] = frozenset()
    present: bool = True
    pattern: LinearPattern | None = None
    at_least: float | None = None
    at_most: float | None = None
    max_age: int | None = None
    text: str = ""  # the condition as written, for decisions and logs

    def holds(self, claims: Mapping[str, Any], now: float) -> bool:
        value = claim(claims, self.path)
        if self.op == "present":
            return (value is not MISSING) == self.present
        if value is MISSING:
            return False
        if self.op == "contains":
            return isinstance(value, list) and any(self._one(v, now) for v in value)
        if self._one(value, now):
            return True
        return isinstance(value, list) and any(self._one(v, now) for v in value)

    def _one(self, value: Any, now: float) -> bool:
        op = self.op
        if op in ("equals", "in", "contains"):
            return typed_key(value) in self.values
        if op == "regex":
            assert self.pattern is not None
            return isinstance(value, str) and self.pattern.fullmatch(value)
        if not _number(value):
            return False
        if op == "maxAge":
            assert self.max_age is not None
            return bool(now - value <= self.max_age)
        return (self.at_least is None or value >= self.at_least) and (
            self.at_most is None or value <= self.at_most
        )
