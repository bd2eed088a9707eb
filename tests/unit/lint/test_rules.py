"""Rules that can never match: each warning for a spec that validates and serves."""

from __future__ import annotations

from typing import Any

import pytest

from authz.lint.rules import never_matching


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


def test_rules_after_a_catch_all_are_never_reached() -> None:
    warnings = never_matching(
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
    assert len(never_matching(rules(catch_all, {"paths": ["/x"]}))) == 1


@pytest.mark.parametrize(
    "first", [{"methods": ["GET"]}, {"hosts": ["a.example.com"]}, {"paths": ["/api/**"]}]
)
def test_a_limited_rule_leaves_the_rest_reachable(first: dict[str, Any]) -> None:
    assert never_matching(rules(first, {"paths": ["/x"]})) == []


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
