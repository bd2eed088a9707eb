"""A cached token's policy checks and decisions are kept between Checks (a cache hit skips
them); what is kept must never answer a request it was not made for: another policy, rule,
token place, connection or snapshot decides afresh, every time."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from cryptography.hazmat.primitives import hashes
from prometheus_client import CollectorRegistry

from authz.keys.thumbprint import b64url
from authz.observe.audit import Audit
from authz.observe.metrics import Metrics
from authz.observe.recorder import Recorder
from authz.policy.snapshot import Snapshot
from authz.request.assembly import pipeline
from authz.request.cache import TokenCache
from authz.request.pipeline import Pipeline
from authz.request.view import KnownConnection, request_view
from authz.transport.dialects import ENVOY_PREFIX, Dialect
from authz.transport.http import HttpChecker
from tests.support.authz import check_request, grpc_checker
from tests.support.docs import issuer, policy, rule
from tests.support.dpop import DPoPClient
from tests.support.pki import CA, pem_cert
from tests.support.snapshots import HTTPS, Served, bearer_token, serve
from tests.support.tokens import NOW

ROUNDS = 3  # the first Check caches the token, the second keeps the results, the third reuses


@dataclass
class Swappable:
    snapshot: Snapshot


def _checker(served: Served | Swappable) -> Pipeline:
    return pipeline(served, TokenCache(), clock=lambda: NOW)


def _reason(
    checker: Pipeline,
    *,
    host: str = "api.example",
    path: str = "/x",
    headers: dict[str, str] | None = None,
    connection: KnownConnection = HTTPS,
) -> str:
    view = request_view("GET", host, path, headers or {}, {}, connection=connection)
    _, outcome = checker.check(view)
    return str(outcome.decision.reason)


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_each_policy_checks_the_audience_of_one_cached_token() -> None:
    served = serve(
        issuer(audiences=["api", "other"]),
        policy("a", hosts=["a.example"], audiences=["api"]),
        policy("b", hosts=["b.example"], audiences=["billing"]),
    )
    checker = _checker(served)
    token = bearer_token(aud="api")
    for _ in range(ROUNDS):
        assert _reason(checker, host="a.example", headers=_bearer(token)) == "allowed"
        assert _reason(checker, host="b.example", headers=_bearer(token)) == "audience_mismatch"


def test_the_place_a_token_came_from_counts_every_time() -> None:
    served = serve(
        issuer(),
        issuer("query", "https://query.test", tokenSources=[{"query": {"name": "access_token"}}]),
        policy(issuers=["idp", "query"]),
    )
    checker = _checker(served)
    token = bearer_token()
    for _ in range(ROUNDS):
        assert _reason(checker, headers=_bearer(token)) == "allowed"
        assert _reason(checker, path=f"/x?access_token={token}") == "source_not_allowed"


def test_a_certificate_bound_token_is_checked_against_each_connection() -> None:
    ca = CA.create("clients")
    _, alice = ca.client("alice")
    on_alice = KnownConnection(scheme="https", peer_certificate=quote(pem_cert(alice).decode()))
    token = bearer_token(cnf={"x5t#S256": b64url(alice.fingerprint(hashes.SHA256()))})
    checker = _checker(serve(issuer(), policy()))
    for _ in range(ROUNDS):
        assert _reason(checker, headers=_bearer(token), connection=on_alice) == "allowed"
        assert _reason(checker, headers=_bearer(token)) == "certificate_missing"


def test_each_rule_decides_on_one_cached_identity() -> None:
    served = serve(
        issuer(),
        policy(
            rules=[
                rule("read", paths=["/read"], requireScopes={"allOf": ["r"]}),
                rule("write", paths=["/write"], requireScopes={"allOf": ["w"]}),
                rule("bound", paths=["/bound"], requireDPoP=True),
            ],
            dpop={},
        ),
    )
    checker = _checker(served)
    token = bearer_token(scope="r")
    for _ in range(ROUNDS):
        assert _reason(checker, path="/read", headers=_bearer(token)) == "allowed"
        assert _reason(checker, path="/write", headers=_bearer(token)) == "insufficient_scope"
        assert _reason(checker, path="/bound", headers=_bearer(token)) == "dpop_required"


def test_a_new_snapshot_decides_afresh() -> None:
    accepting = serve(issuer(audiences=["api", "other"]), policy(audiences=["api"]))
    refusing = serve(issuer(audiences=["api", "other"]), policy(audiences=["other"]))
    serving = Swappable(accepting.snapshot)
    checker = _checker(serving)
    token = bearer_token(aud="api")
    for _ in range(ROUNDS):
        serving.snapshot = accepting.snapshot
        assert _reason(checker, headers=_bearer(token)) == "allowed"
        serving.snapshot = refusing.snapshot
        assert _reason(checker, headers=_bearer(token)) == "audience_mismatch"


class Clock:
    """The time the pipeline reads, moved by the test."""

    def __init__(self) -> None:
        self.now = float(NOW)

    def __call__(self) -> float:
        return self.now


def test_an_issuers_max_age_is_checked_on_every_use() -> None:
    """requiredClaims with maxAgeSeconds: a kept result must not outlive the age."""
    served = serve(issuer(requiredClaims=[{"path": "auth_time", "maxAgeSeconds": 300}]), policy())
    clock = Clock()
    checker = pipeline(served, TokenCache(), clock=clock)
    token = bearer_token(auth_time=NOW - 200)
    for _ in range(ROUNDS):
        assert _reason(checker, headers=_bearer(token)) == "allowed"
    clock.now += 101
    for _ in range(ROUNDS):
        assert _reason(checker, headers=_bearer(token)) == "required_claim_mismatch"


def test_a_rules_max_age_is_checked_on_every_use() -> None:
    """A rule's claim condition with maxAgeSeconds: its decision is never kept."""
    served = serve(
        issuer(),
        policy(rules=[rule("recent", claims=[{"path": "auth_time", "maxAgeSeconds": 300}])]),
    )
    clock = Clock()
    checker = pipeline(served, TokenCache(), clock=clock)
    token = bearer_token(auth_time=NOW - 200)
    for _ in range(ROUNDS):
        assert _reason(checker, headers=_bearer(token)) == "allowed"
    clock.now += 101
    for _ in range(ROUNDS):
        assert _reason(checker, headers=_bearer(token)) == "claim_mismatch"


def test_each_rule_applies_its_own_issuers_and_audiences_to_one_cached_token() -> None:
    served = serve(
        issuer(audiences=["api", "admin"]),
        issuer("other", "https://other.test"),
        policy(
            issuers=["idp", "other"],
            audiences=["api", "admin"],
            rules=[
                rule("admin", paths=["/admin/**"], audiences=["admin"]),
                rule("others", paths=["/others/**"], issuers=[{"name": "other"}]),
                rule("rest"),
            ],
        ),
    )
    checker = _checker(served)
    token = bearer_token(aud="api")
    for _ in range(ROUNDS):
        assert _reason(checker, path="/x", headers=_bearer(token)) == "allowed"
        assert _reason(checker, path="/admin/x", headers=_bearer(token)) == "audience_mismatch"
        assert _reason(checker, path="/others/x", headers=_bearer(token)) == "issuer_not_trusted"


def test_a_rules_request_conditions_hold_for_each_request() -> None:
    """Header conditions choose the rule per request, whatever was kept for the token."""
    served = serve(
        issuer(),
        policy(
            defaultAction="deny",
            rules=[
                rule(
                    "canary",
                    match={"headers": [{"name": "x-canary", "present": True}]},
                    requireScopes={"allOf": ["canary"]},
                ),
                rule("rest"),
            ],
        ),
    )
    checker = _checker(served)
    token = bearer_token(scope="read")
    for _ in range(ROUNDS):
        assert _reason(checker, headers=_bearer(token)) == "allowed"
        canary = {**_bearer(token), "x-canary": "1"}
        assert _reason(checker, headers=canary) == "insufficient_scope"


def test_a_dpop_proof_is_checked_every_time() -> None:
    """A bound token's cached result never stands in for its proof: a proof used again is
    a replay, a missing one is missing, however often the token was allowed before."""
    client = DPoPClient()
    token = bearer_token(cnf={"jkt": client.jkt})
    checker = _checker(serve(issuer(), policy(dpop={})))
    for _ in range(ROUNDS):
        headers = client.headers(token, htu="https://api.example/x")
        assert _reason(checker, headers=headers) == "allowed"
        assert _reason(checker, headers=headers) == "dpop_proof_replayed"
        assert _reason(checker, headers={"authorization": f"DPoP {token}"}) == "dpop_proof_missing"


def _assigned(kept: Any) -> tuple[object, ...]:
    """What a record's fields hold (compared by identity: what frozen would protect)."""
    return tuple(getattr(kept, f.name) for f in dataclasses.fields(kept))


def test_what_is_kept_is_never_changed_by_its_users() -> None:
    """A kept Authentication or Decision is shared by every later Check of the token, in
    any thread. A record (authz.request.records) is frozen only to the type checker (a
    frozen dataclass costs a Check ~0.65 us per Decision built): so nothing on the way,
    the responder, both transports, the audit line, a dry run, may assign to one."""
    served = serve(
        issuer(),
        policy(rules=[rule("read", paths=["/read"], requireScopes={"allOf": ["r"]}), rule("rest")]),
        policy(
            "dry",
            hosts=["dry.example"],
            dryRun=True,
            rules=[rule("admin", requireScopes={"allOf": ["admin"]})],
        ),
    )
    grpc = grpc_checker(served, clock=lambda: NOW)
    http = HttpChecker(grpc.pipeline, Recorder(Audit(Metrics(CollectorRegistry()))))
    recorder = Recorder(Audit(Metrics(CollectorRegistry())))
    token = bearer_token(scope="r")
    seen: dict[int, tuple[object, tuple[object, ...]]] = {}
    uses: Counter[int] = Counter()
    for _ in range(ROUNDS + 1):
        for host, path in (("api.example", "/read"), ("api.example", "/x"), ("dry.example", "/x")):
            headers = {"authorization": f"Bearer {token}"}
            request = check_request(headers=headers, host=host, path=path, scheme="https")
            _, outcome = grpc.check(request)
            recorder.record(outcome, 0.001, headers)
            envoy = {**headers, "host": host, "x-forwarded-proto": "https"}
            decided = http.decide(Dialect.ENVOY, "GET", ENVOY_PREFIX + path, envoy, set())
            assert isinstance(decided, tuple)
            http.render(decided[0], Dialect.ENVOY)
            for result in (outcome, decided[1]):
                for kept in (result.authentication, result.decision):
                    seen.setdefault(id(kept), (kept, _assigned(kept)))
                    uses[id(kept)] += 1
    shared = [seen[key][0] for key, count in uses.items() if count > 1]
    assert {type(kept).__name__ for kept in shared} == {"Authentication", "Decision"}
    for kept, assigned in seen.values():
        now = _assigned(kept)
        assert all(a is b for a, b in zip(now, assigned, strict=True)), kept
