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


_LISTED = ("methods", "hosts", "paths", "pathPrefixes")
_CATCH_ALL_PATHS = ("/**",)


def _matches_everything(match: Mapping[str, Any]) -> bool:
    """No limit on method and host, none on path (or a path that is every path) and no other
    condition: every request reaches the rule, whatever its requirements."""
    if any(v for k, v in match.items() if k not in _LISTED):
        return False
    if match.get("methods") or any(h != "*" for h in match.get("hosts", ())):
        return False
    paths, prefixes = match.get("paths", ()), match.get("pathPrefixes", ())
    if not paths and not prefixes:
        return True
    return any(p in _CATCH_ALL_PATHS for p in paths) or "/" in prefixes


def _shape(match: Mapping[str, Any]) -> str:
    """The match as a comparable value: lists of names as sets, hosts case-insensitive."""

    def value(key: str, given: Any) -> Any:
        if isinstance(given, list) and all(isinstance(v, str) for v in given):
            return sorted(
                {v.lower() for v in given} if key in ("hosts", "notHosts") else set(given)
            )
        return given

    return json.dumps({k: value(k, v) for k, v in match.items() if v}, sort_keys=True)


def unreachable_rules(rules: Sequence[Mapping[str, Any]]) -> Iterator[str]:
    """Rules no request reaches, the first matching rule deciding: those after a catch-all
    rule, and those with the same match as an earlier rule."""
    seen: dict[str, int] = {}
    catch_all: int | None = None
    for i, rule in enumerate(rules):
        match = rule.get("match", {})
        where = f"spec.rules[{i}]"
        if catch_all is not None:
            yield (
                f"{where}: never reached: rules[{catch_all}] before it matches every request "
                "(the first matching rule decides)"
            )
            continue
        shape = _shape(match)
        if shape in seen:
            yield (
                f"{where}: never reached: rules[{seen[shape]}] before it has the same match "
                "(the first matching rule decides)"
            )
            continue
        seen[shape] = i
        if _matches_everything(match):
            catch_all = i


def policy_warnings(spec: Mapping[str, Any]) -> list[str]:
    out = list(unreachable_rules(spec["rules"]))
    for i, rule in enumerate(spec["rules"]):
        out += claim_value_warnings(rule.get("claims", ()), f"spec.rules[{i}].claims")
    return out
