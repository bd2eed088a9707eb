"""Rules no request reaches: warned about in the policy's status, by `authz lint` and by the
admission webhook (the policy still serves)."""

from __future__ import annotations

from typing import Any

import pytest

from authz.policy.advice import unreachable_rules


def rules(*matches: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"match": m} for m in matches]


def unreachable(given: list[dict[str, Any]]) -> list[str]:
    return list(unreachable_rules(given))


def test_rules_after_a_catch_all_are_never_reached() -> None:
    warnings = unreachable(
        rules({"paths": ["/health"]}, {"paths": ["/**"]}, {"paths": ["/admin/**"]}, {})
    )
    assert warnings == [
        "spec.rules[2]: never reached: rules[1] before it matches every request (the first "
        "matching rule decides)",
        "spec.rules[3]: never reached: rules[1] before it matches every request (the first "
        "matching rule decides)",
    ]


@pytest.mark.parametrize(
    "catch_all", [{}, {"paths": ["/**"]}, {"pathPrefixes": ["/"]}, {"hosts": ["*"]}]
)
def test_what_counts_as_a_catch_all(catch_all: dict[str, Any]) -> None:
    assert len(unreachable(rules(catch_all, {"paths": ["/x"]}))) == 1


@pytest.mark.parametrize(
    "first", [{"methods": ["GET"]}, {"hosts": ["a.example.com"]}, {"paths": ["/api/**"]}]
)
def test_a_limited_rule_leaves_the_rest_reachable(first: dict[str, Any]) -> None:
    assert unreachable(rules(first, {"paths": ["/x"]})) == []


def test_a_rule_with_the_same_match_as_an_earlier_one() -> None:
    warnings = unreachable(
        rules(
            {"methods": ["GET", "HEAD"], "paths": ["/a", "/b"]},
            {"methods": ["HEAD", "GET"], "paths": ["/b", "/a"]},
        )
    )
    assert warnings == [
        "spec.rules[1]: never reached: rules[0] before it has the same match (the first "
        "matching rule decides)"
    ]


@pytest.mark.parametrize(
    "first",
    [
        {"headers": [{"name": "x-canary", "equals": "1"}]},
        {"ipBlocks": ["10.0.0.0/8"]},
        {"notPaths": ["/admin/**"]},
    ],
)
def test_a_rule_limited_by_another_condition_is_no_catch_all(first: dict[str, Any]) -> None:
    """Headers, addresses, `not*` lists... limit a rule as much as methods or paths do: the
    rules after it and a rule without that condition stay reachable."""
    assert unreachable(rules(first, {"paths": ["/x"]}, {})) == []
