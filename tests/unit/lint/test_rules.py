"""Rules that can never match: each warning for a spec that validates and serves."""

from __future__ import annotations

from typing import Any

import pytest

from authz.lint.rules import never_matching
from authz.policy.advice import matches_everything, unreachable_rules


def rules(*matches: dict[str, Any]) -> dict[str, Any]:
    return {"rules": [{"match": m} for m in matches]}


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        (
            {"paths": ["/orders?id=1"]},
            "it has a query string, and rules match the path without it: write '/orders'",
        ),
        ({"pathPrefixes": ["/search?q="]}, "it has a query string"),
        ({"paths": ["/a#top"]}, "it has a fragment"),
        ({"paths": ["/api//orders"]}, "the proxy normalises such a path (to '/api/orders')"),
        ({"paths": ["/api/./orders/**"]}, "no request path has this form"),
        ({"paths": ["/api/../admin"]}, "(to '/admin')"),
        ({"paths": ["/%41dmin"]}, "(to '/Admin')"),
        ({"paths": ["/a b"]}, "(to '/a%20b')"),
        ({"paths": ["/files/%2Fetc"]}, "requests with an encoded '/' or '\\' are refused"),
        ({"pathPrefixes": ["/orders/*"]}, "is a literal prefix, '*' and '{' included"),
    ],
)
def test_paths_that_never_match(match: dict[str, Any], expected: str) -> None:
    (warning,) = never_matching(rules(match))
    assert warning.startswith("spec.rules[0].match.")
    assert expected in warning


@pytest.mark.parametrize(
    "match",
    [
        {"paths": ["/orders/**", "/orders/{id}", "/files/{rest=**}", "/a/*/b", "/"]},
        {"pathPrefixes": ["/api/", "/"]},
        {"paths": ["/x/"], "methods": ["GET"], "hosts": ["api.example.com"]},
    ],
)
def test_paths_that_can_match_are_not_reported(match: dict[str, Any]) -> None:
    assert never_matching(rules(match)) == []


def test_rules_after_a_catch_all_are_the_compilers_warning_once() -> None:
    """The compiler warns about rules after a catch-all (policy.advice, in the object's
    status too); lint reports the build's warnings, so its own rules do not repeat it."""
    spec = rules({"paths": ["/health"]}, {"paths": ["/**"]}, {"paths": ["/admin/**"]}, {})
    assert list(unreachable_rules(spec["rules"])) == [
        "spec.rules[2]: never reached: spec.rules[1] matches every request",
        "spec.rules[3]: never reached: spec.rules[1] matches every request",
    ]
    assert never_matching(spec) == []


@pytest.mark.parametrize(
    "catch_all", [{}, {"paths": ["/**"]}, {"pathPrefixes": ["/"]}, {"hosts": ["*"]}]
)
def test_what_counts_as_a_catch_all(catch_all: dict[str, Any]) -> None:
    assert matches_everything(catch_all)
    assert len(list(unreachable_rules(rules(catch_all, {"paths": ["/x"]})["rules"]))) == 1


@pytest.mark.parametrize(
    "first",
    [
        {"methods": ["GET"]},
        {"hosts": ["a.example.com"]},
        {"paths": ["/api/**"]},
        # a request condition limits a rule as much as a path does (issue 12)
        {"headers": [{"name": "x-canary", "exact": "1"}]},
        {"ipBlocks": ["10.0.0.0/8"]},
        {"notPaths": ["/admin/**"]},
        {"principals": ["spiffe://cluster.local/ns/ops/sa/*"]},
    ],
)
def test_a_limited_rule_leaves_the_rest_reachable(first: dict[str, Any]) -> None:
    assert not matches_everything(first)
    assert list(unreachable_rules(rules(first, {"paths": ["/x"]})["rules"])) == []
    assert never_matching(rules(first, {"paths": ["/x"]})) == []


def test_rules_with_the_same_paths_but_other_conditions_are_both_reachable() -> None:
    canary = {"paths": ["/a"], "headers": [{"name": "x-canary", "exact": "1"}]}
    assert never_matching(rules(canary, {"paths": ["/a"]})) == []
    assert len(never_matching(rules(canary, dict(canary)))) == 1


def test_a_rule_with_the_same_match_as_an_earlier_one() -> None:
    warnings = never_matching(
        rules(
            {"methods": ["GET", "HEAD"], "paths": ["/a", "/b"]},
            {"methods": ["HEAD", "GET"], "paths": ["/b", "/a"]},
        )
    )
    assert warnings == [
        "spec.rules[1]: never reached: rules[0] before it has the same match (the first "
        "matching rule decides)"
    ]
