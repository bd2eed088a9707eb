"""All matching is linear-time (issue 11, item 10). With Python's backtracking `re`, a glob
with several `**` and one unauthenticated 8 KiB path held a worker for seconds, and a claim
`regex` like `(a+)+b` did the same with a token's claim. RE2 decides both in microseconds."""

from __future__ import annotations

import time

import pytest

from authz.request.view import KnownConnection
from tests.support.docs import issuer, policy, rule
from tests.support.snapshots import bearer_token, check, serve

# Each `**` can absorb any run of segments: a backtracking engine tries them all.
GLOB = "/**/a/**/a/**/a/**/a/**/b"
SERVED = serve(
    issuer(),
    policy(
        rules=[
            rule("deep", paths=[GLOB], action="allowAnonymous"),
            rule("claim", paths=["/claim"], claims=[{"path": "name", "regex": "(a+)+b"}]),
        ]
    ),
)


def _timed(**request: object) -> tuple[float, str]:
    started = time.perf_counter()
    _, outcome = check(SERVED, **request)  # type: ignore[arg-type]
    return time.perf_counter() - started, outcome.decision.reason.value


def test_an_8_kib_path_against_a_glob_of_many_double_stars() -> None:
    path = "/" + "a/" * 4090 + "c"  # 8 KiB, and almost matching
    seconds, reason = _timed(path=path)
    assert reason == "no_rule"
    assert seconds < 0.05, seconds
    assert _timed(path="/x/a/y/a/a/z/a/b")[1] == "allowed_anonymous"  # the glob still works


def test_a_claim_regex_that_would_backtrack() -> None:
    token = bearer_token(name="a" * 5000 + "!")
    seconds, reason = _timed(path="/claim", token=token)
    assert reason == "claim_mismatch"
    assert seconds < 0.05, seconds
    assert _timed(path="/claim", token=bearer_token(name="aaab"))[1] == "allowed"


@pytest.mark.parametrize("pattern", [r"(a)\1", r"(?=a)a", r"(?<!x)y"])
def test_patterns_that_need_backtracking_are_refused(pattern: str) -> None:
    served = serve(issuer(), policy(rules=[rule("r", claims=[{"path": "x", "regex": pattern}])]))
    status = served.statuses["AuthzPolicy/default/api"]
    assert not status.accepted and "regex" in status.problems[0], status.problems


def test_request_conditions_on_large_attacker_input() -> None:
    """Header regexes and principal globs run in RE2 too, and an X-Forwarded-For of
    thousands of entries costs one split: a client cannot make a rule slow."""
    served = serve(
        issuer(),
        policy(
            rules=[
                rule(
                    "header",
                    action="allowAnonymous",
                    match={"headers": [{"name": "x-h", "regex": "(a+)+b"}]},
                ),
                rule(
                    "principal",
                    action="allowAnonymous",
                    match={"principals": ["spiffe://**/a/**/a/**/a/**/b"]},
                ),
                rule(
                    "forwarded",
                    action="allowAnonymous",
                    match={"remoteIpBlocks": ["203.0.113.0/24"]},
                ),
            ],
            xffNumTrustedHops=2,
        ),
    )
    started = time.perf_counter()
    _, outcome = check(
        served,
        headers={"x-h": "a" * 30000 + "!", "x-forwarded-for": ", ".join(["10.0.0.1"] * 3000)},
        connection=KnownConnection(peer_principal="spiffe://t/" + "a/" * 4000 + "c"),
    )
    seconds = time.perf_counter() - started
    assert outcome.decision.reason.value == "no_rule"
    assert seconds < 0.05, seconds
