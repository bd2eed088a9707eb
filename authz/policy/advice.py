"""Warnings about valid policies that probably do not mean what they say: shown by
`authz lint`, in the object's status and by `authz check` (the object still serves)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

_LOOKS_TYPED = frozenset({"true", "false", "null"})


def _typed_text(value: object) -> bool:
    """A string that is also a JSON boolean, null or number: `"true"`, `"1"`, `"2.5"`."""
    if not isinstance(value, str):
        return False
    if value in _LOOKS_TYPED:
        return True
    try:
        return isinstance(json.loads(value), int | float)
    except ValueError:
        return False


def claim_value_warnings(conditions: Sequence[Mapping[str, Any]], where: str) -> Iterator[str]:
    """Claim values compare with their JSON type, so `equals: "true"` never matches the
    boolean `true` (as it did when values compared as text): say so where it may bite."""
    for i, condition in enumerate(conditions):
        values = [condition.get("equals"), condition.get("contains"), *condition.get("in", ())]
        for value in values:
            if _typed_text(value):
                yield (
                    f"{where}[{i}]: {value!r} is a string and matches only the string "
                    f"{json.dumps(value)}; claims compare with their JSON type: write "
                    f"{value} without quotes for a boolean or number claim"
                )
                break


_CATCH_ALL_PATHS = ("/**",)
_LIMITS = frozenset({"methods", "hosts", "paths", "pathPrefixes"})


def matches_everything(match: Mapping[str, Any]) -> bool:
    """A rule match every request reaches, whatever its requirements: no limit on method or
    host (`*` is none), none on path (`/**` and the prefix `/` are none), and no other
    condition (headers, addresses, peers, ports, negations)."""
    if any(value for key, value in match.items() if key not in _LIMITS):
        return False
    if match.get("methods") or any(h != "*" for h in match.get("hosts", ())):
        return False
    paths, prefixes = match.get("paths", ()), match.get("pathPrefixes", ())
    if not paths and not prefixes:
        return True
    return any(p in _CATCH_ALL_PATHS for p in paths) or "/" in prefixes


def unreachable_rules(rules: Sequence[Mapping[str, Any]]) -> Iterator[str]:
    """Rules after one that matches every request are never tried (the first match decides)."""
    for i, rule in enumerate(rules):
        if matches_everything(rule.get("match", {})):
            for j in range(i + 1, len(rules)):
                yield f"spec.rules[{j}]: never reached: spec.rules[{i}] matches every request"
            return


def policy_warnings(spec: Mapping[str, Any]) -> list[str]:
    out = list(unreachable_rules(spec["rules"]))
    for i, rule in enumerate(spec["rules"]):
        out += claim_value_warnings(rule.get("claims", ()), f"spec.rules[{i}].claims")
    return out
