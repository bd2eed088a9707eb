"""Paths that can never match: each warning for a spec that validates and serves (rules never
reached: tests/unit/policy/test_advice.py)."""

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
