"""What Checks keep between them (decisions, policy checks, answers, audit fields per token
object) holds no more than the token cache's hot set and the serving snapshot: with more
active tokens than hot entries, or after hot reloads, what a server holds stays what its
cache budget and its policies say, and the answers are the same."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from authz.observe.audit import Audit
from authz.observe.metrics import Metrics
from authz.observe.recorder import Recorder
from authz.policy.snapshot import CompiledPolicy, Snapshot
from authz.request.assembly import pipeline
from authz.request.cache import TokenCache
from authz.request.verify import VerifiedToken
from authz.request.view import request_view
from authz.transport.dialects import ENVOY_PREFIX, Dialect
from authz.transport.http import HttpChecker
from tests.support.docs import issuer, policy, rule
from tests.support.snapshots import HTTPS, bearer_token, serve, serve_sources
from tests.support.tokens import NOW

HOST = "api.example"
ROUND_ROBIN = 4  # tokens in turn: twice the hot set, so every hit is on a cold record


@dataclass
class Swappable:
    """What a policy store is to a pipeline: the snapshot serving now, swapped by the test."""

    snapshot: Snapshot


def _living(kind: type, test: Any) -> int:
    """How many objects of `kind` for which `test` holds are still alive."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, kind) and test(o))


def test_more_active_tokens_than_hot_entries_keep_no_token_objects() -> None:
    """A hit on a cold record decodes a new token object; nothing is kept per such object,
    so only the hot set's objects stay alive, and every answer is the one a Check that
    keeps nothing (no cache) gives."""
    served = serve(
        issuer(),
        policy(
            rules=[
                rule("read", paths=["/read"], requireScopes={"allOf": ["r"]}),
                rule("rest"),
            ]
        ),
    )
    ours = next(iter(served.snapshot.policies[0].issuers_by_iss.values()))
    tokens = [bearer_token(sub=f"user-{n}", scope="r" if n % 2 else "w") for n in range(4)]
    checker = pipeline(served, TokenCache(hot_entries=2), clock=lambda: NOW)
    keeping_nothing = pipeline(served, TokenCache(0), clock=lambda: NOW)
    audit = Audit(Metrics(CollectorRegistry()))
    reasons = set()
    for n in range(40):
        headers = {"authorization": f"Bearer {tokens[n % ROUND_ROBIN]}"}
        path = "/read" if n % 3 else "/x"
        view = request_view("GET", HOST, path, headers, {}, connection=HTTPS)
        answer, outcome = checker.check(view)
        audit.record(outcome, 0.001)
        expected_answer, expected = keeping_nothing.check(view)
        assert answer == expected_answer and outcome.decision == expected.decision
        reasons.add(str(outcome.decision.reason))
    assert reasons == {"allowed", "insufficient_scope"}
    del outcome, expected
    assert _living(VerifiedToken, lambda v: v.issuer is ours) <= 2  # the hot set's


def test_a_hot_token_is_still_kept() -> None:
    """The fix keeps what it is for: a token used again while hot finds its kept results
    (the same answer object, which is what lets the transport reuse its rendering)."""
    served = serve(issuer(), policy())
    checker = pipeline(served, TokenCache(hot_entries=2), clock=lambda: NOW)
    headers = {"authorization": f"Bearer {bearer_token()}"}
    view = request_view("GET", HOST, "/x", headers, {}, connection=HTTPS)
    answers = [checker.check(view)[0] for _ in range(3)]
    assert answers[1] is answers[2] and answers[0] == answers[1]


def _policy_docs(n: int) -> list[dict[str, Any]]:
    """Snapshot `n`: the same issuer, a policy whose rule moved (a hot reload's edit)."""
    return [
        issuer(),
        policy(
            "swapped",
            rules=[
                rule("read", paths=[f"/v{n}/**"], requireScopes={"allOf": ["r"]}),
                rule("rest"),
            ],
        ),
    ]


def test_swapped_snapshots_are_not_kept_alive() -> None:
    """50 hot reloads with Checks in between, each result kept (a hot token's policy checks
    and decision, an allow answer and whether the HTTP transport can carry it out): the old
    compiled policies are let go, not held by what was kept."""
    served = serve_sources(_policy_docs(0))
    serving = Swappable(served.snapshot)
    checker = HttpChecker(
        pipeline(serving, TokenCache(), clock=lambda: NOW),
        Recorder(Audit(Metrics(CollectorRegistry()))),
    )
    for n in range(1, 51):
        served = serve_sources(_policy_docs(n), previous=served)
        serving.snapshot = served.snapshot
        # callers come and go: what was kept for one is not replaced by a later Check
        reader = bearer_token(sub=f"reader-{n}", scope="r")
        writer = bearer_token(sub=f"writer-{n}", scope="w")
        for path, token, reason in (
            (f"/v{n}/a", reader, "allowed"),
            (f"/v{n}/a", writer, "insufficient_scope"),
            (f"/v{n - 1}/a", writer, "allowed"),  # the rule moved
        ):
            headers = {"host": HOST, "x-forwarded-proto": "https"}
            headers["authorization"] = f"Bearer {token}"
            for _ in range(3):  # verified, then kept, then reused
                decided = checker.decide(Dialect.ENVOY, "GET", ENVOY_PREFIX + path, headers, set())
                assert isinstance(decided, tuple)
                assert str(decided[1].decision.reason) == reason
    del decided, served
    assert _living(CompiledPolicy, lambda p: p.id.endswith("/swapped")) <= 2
