"""A policy's glob patterns matched in one RE2 set; what a set matched for a path is kept,
so a repeated path skips RE2 (whose binding releases the GIL on every match)."""

from __future__ import annotations

from authz.policy import patterns
from authz.policy.patterns import LinearPattern, PatternSet


def test_each_set_answers_for_its_own_patterns() -> None:
    orders = PatternSet([LinearPattern("/orders/[^/]+"), LinearPattern("/orders/.*")])
    users = PatternSet([LinearPattern("/users/[^/]+")])
    for _ in range(3):  # the second and third answers are the kept ones
        assert orders.matching("/orders/7") == {"/orders/[^/]+", "/orders/.*"}
        assert orders.matching("/orders/7/items") == {"/orders/.*"}
        assert users.matching("/orders/7") == frozenset()
        assert users.matching("/users/alice") == {"/users/[^/]+"}


def test_only_short_paths_are_kept_and_the_memo_is_bounded() -> None:
    orders = PatternSet([LinearPattern("/orders/.*")])
    long_path = "/orders/" + "x" * 300
    assert orders.matching(long_path) == {"/orders/.*"}
    assert (orders, long_path) not in patterns._MATCHED
    for i in range(patterns._MAX_MATCHED + 10):
        assert orders.matching(f"/orders/{i}") == {"/orders/.*"}
    assert len(patterns._MATCHED) <= patterns._MAX_MATCHED
