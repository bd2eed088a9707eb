"""DPoP-bound tokens through the whole pipeline, as a client and Envoy see the answer: the
status, the reason, the challenge, and what reaches the upstream (RFC 9449)."""

from __future__ import annotations

from typing import Any

import pytest

from authz.request.assembly import pipeline
from authz.request.cache import TokenCache
from authz.request.decision import Reason
from authz.request.nonces import Nonces
from authz.request.pipeline import Pipeline, WouldWait
from authz.request.replay import ReplayUnavailable, Seen
from authz.request.respond import Answer
from authz.request.view import KnownConnection, request_view
from tests.support.docs import issuer, policy, rule
from tests.support.dpop import DPoPClient
from tests.support.snapshots import Served, bearer_token, check, serve
from tests.support.tokens import NOW

CLIENT = DPoPClient()
BOUND = bearer_token(cnf={"jkt": CLIENT.jkt}, scope="read")
HOST = "api.example"
ALGS = "ES256 ES384 ES512 EdDSA PS256 PS384 PS512 RS256 RS384 RS512"

SERVED = serve(
    issuer(),
    issuer("strict", "https://strict.test", requireDPoP=True),
    policy(
        issuers=["idp", "strict"],
        dpop={},
        rules=[
            rule("pop", paths=["/pop/**"], requireDPoP=True),
            rule("open", paths=["/open"], action="allowAnonymous"),
            rule("read", requireScopes={"allOf": ["read"]}),
        ],
        response={"headers": [{"name": "x-auth-subject", "claim": "sub"}]},
    ),
)


def _dpop(served: Served = SERVED, *, path: str = "/x", token: str = BOUND, **kw: Any) -> Any:
    return check(
        served, path=path, headers=CLIENT.headers(token, htu=f"https://{HOST}{path}"), **kw
    )


def _header(answer: Answer, name: str) -> str | None:
    return next((v for k, v in answer.headers if k == name), None)


def test_a_bound_token_with_its_proof_is_allowed() -> None:
    answer, outcome = _dpop()
    assert (answer.status, answer.reason) == (200, "allowed")
    assert outcome.authentication is not None and outcome.authentication.binding == "dpop"
    assert ("x-auth-subject", "alice") in answer.headers


@pytest.mark.parametrize(
    ("headers", "reason", "error"),
    [
        ({"authorization": f"DPoP {BOUND}"}, Reason.DPOP_PROOF_MISSING, "invalid_dpop_proof"),
        (
            {"authorization": f"DPoP {BOUND}", "dpop": "garbage"},
            Reason.DPOP_PROOF_MALFORMED,
            "invalid_dpop_proof",
        ),
        (
            {
                "authorization": f"DPoP {BOUND}",
                "dpop": f"{CLIENT.proof(BOUND)},{CLIENT.proof(BOUND)}",
            },
            Reason.DPOP_PROOF_MALFORMED,
            "invalid_dpop_proof",
        ),
        (
            CLIENT.headers(BOUND, htm="POST", htu=f"https://{HOST}/x"),
            Reason.DPOP_METHOD_MISMATCH,
            "invalid_dpop_proof",
        ),
        (
            CLIENT.headers(BOUND, htu=f"https://{HOST}/elsewhere"),
            Reason.DPOP_URI_MISMATCH,
            "invalid_dpop_proof",
        ),
        (
            CLIENT.headers(BOUND, htu=f"http://{HOST}/x"),
            Reason.DPOP_URI_MISMATCH,
            "invalid_dpop_proof",
        ),
        (
            CLIENT.headers(BOUND, htu=f"https://{HOST}/x", iat=NOW - 61),
            Reason.DPOP_PROOF_EXPIRED,
            "invalid_dpop_proof",
        ),
        (
            {
                "authorization": f"DPoP {BOUND}",
                "dpop": CLIENT.proof(bearer_token(), htu=f"https://{HOST}/x"),
            },
            Reason.DPOP_TOKEN_HASH_MISMATCH,
            "invalid_dpop_proof",
        ),
        (
            DPoPClient().headers(BOUND, htu=f"https://{HOST}/x"),
            Reason.DPOP_KEY_MISMATCH,
            "invalid_token",
        ),
        (
            CLIENT.headers(bearer_token(scope="read"), htu=f"https://{HOST}/x"),
            Reason.DPOP_KEY_MISMATCH,
            "invalid_token",
        ),
        (
            CLIENT.headers(
                bearer_token(cnf={"jkt": CLIENT.jkt}, exp=NOW - 100, iat=NOW - 400),
                htu=f"https://{HOST}/x",
            ),
            Reason.TOKEN_EXPIRED,
            "invalid_token",
        ),
    ],
)
def test_each_failure_is_a_401_with_a_dpop_challenge(
    headers: dict[str, str], reason: Reason, error: str
) -> None:
    answer, _ = check(SERVED, path="/x", headers=headers)
    assert (answer.status, answer.reason) == (401, reason.value)
    challenge = _header(answer, "www-authenticate")
    assert challenge is not None and challenge.startswith('DPoP realm="authz", ')
    assert f'error="{error}"' in challenge and challenge.endswith(f'algs="{ALGS}"')
    assert BOUND not in answer.body and BOUND not in challenge


def test_a_replayed_proof_is_refused_by_the_same_pipeline() -> None:
    checker = pipeline(SERVED, TokenCache(), clock=lambda: NOW)
    headers = CLIENT.headers(BOUND, htu=f"https://{HOST}/x")
    view = request_view("GET", HOST, "/x", headers, {}, connection=KnownConnection(scheme="https"))
    assert checker.check(view)[0].status == 200
    answer, _ = checker.check(view)
    assert (answer.status, answer.reason) == (401, "dpop_proof_replayed")
    # A new proof for the same token and request is fine; the token was cached.
    fresh = CLIENT.headers(BOUND, htu=f"https://{HOST}/x")
    view = request_view("GET", HOST, "/x", fresh, {}, connection=KnownConnection(scheme="https"))
    answer, outcome = checker.check(view)
    assert answer.status == 200
    assert outcome.authentication is not None and outcome.authentication.reused


def test_a_proof_that_fails_does_not_use_up_its_jti() -> None:
    checker = pipeline(SERVED, TokenCache(), clock=lambda: NOW)
    proof = CLIENT.proof(BOUND, htu=f"https://{HOST}/x", jti="once")
    wrong = {"authorization": f"DPoP {bearer_token(cnf={'jkt': 'other'})}", "dpop": proof}
    https = KnownConnection(scheme="https")
    assert (
        checker.check(request_view("GET", HOST, "/x", wrong, {}, connection=https))[0].status == 401
    )
    right = {
        "authorization": f"DPoP {BOUND}",
        "dpop": CLIENT.proof(BOUND, htu=f"https://{HOST}/x", jti="once"),
    }
    assert (
        checker.check(request_view("GET", HOST, "/x", right, {}, connection=https))[0].status == 200
    )


def test_a_bound_token_sent_as_a_bearer_token_is_refused() -> None:
    answer, _ = check(SERVED, path="/x", token=BOUND)
    assert (answer.status, answer.reason) == (401, "dpop_bound_as_bearer")
    assert _header(answer, "www-authenticate") == (
        'DPoP realm="authz", error="invalid_token", error_description="a DPoP-bound token '
        f'must be sent with the DPoP scheme and a proof", algs="{ALGS}"'
    )
    # Even where DPoP is not read at all (RFC 9449 section 7.2).
    plain = serve(issuer(), policy())
    answer, _ = check(plain, path="/x", token=BOUND)
    assert (answer.status, answer.reason) == (401, "dpop_bound_as_bearer")
    assert (_header(answer, "www-authenticate") or "").startswith(
        'Bearer realm="authz", error="invalid_token"'
    )


def test_a_policy_without_a_dpop_block_does_not_read_the_dpop_scheme() -> None:
    plain = serve(issuer(), policy())
    answer, _ = check(plain, path="/x", headers=CLIENT.headers(BOUND, htu=f"https://{HOST}/x"))
    assert (answer.status, answer.reason) == (401, "token_missing")
    assert _header(answer, "www-authenticate") == 'Bearer realm="authz"'


def test_plain_bearer_tokens_still_work_and_the_challenge_offers_both_schemes() -> None:
    answer, outcome = check(SERVED, path="/x", token=bearer_token(scope="read"))
    assert answer.status == 200
    assert outcome.authentication is not None and outcome.authentication.binding is None
    answer, _ = check(SERVED, path="/x")
    assert (answer.status, answer.reason) == (401, "token_missing")
    assert _header(answer, "www-authenticate") == (
        f'Bearer realm="authz", DPoP realm="authz", algs="{ALGS}"'
    )
    answer, _ = check(SERVED, path="/x", token=bearer_token(exp=NOW - 100, iat=NOW - 400))
    assert _header(answer, "www-authenticate") == (
        'Bearer realm="authz", error="invalid_token", error_description="the token has expired", '
        f'DPoP realm="authz", algs="{ALGS}"'
    )


def test_a_rule_can_require_dpop() -> None:
    answer, _ = check(SERVED, path="/pop/a", token=bearer_token(scope="read"))
    assert (answer.status, answer.reason) == (401, "dpop_required")
    assert (_header(answer, "www-authenticate") or "").startswith(
        'DPoP realm="authz", error="invalid_token"'
    )
    answer, _ = _dpop(path="/pop/a")
    assert (answer.status, answer.reason) == (200, "allowed")


def test_an_issuer_can_require_dpop() -> None:
    plain = bearer_token(iss="https://strict.test")
    assert check(SERVED, path="/open", token=plain)[0].reason == "dpop_required"
    bound = bearer_token(iss="https://strict.test", cnf={"jkt": CLIENT.jkt})
    assert _dpop(path="/open", token=bound)[0].reason == "allowed_anonymous"


def test_insufficient_scope_of_a_dpop_token_is_a_dpop_challenge() -> None:
    token = bearer_token(cnf={"jkt": CLIENT.jkt}, scope="other")
    answer, _ = _dpop(token=token)
    assert (answer.status, answer.reason) == (403, "insufficient_scope")
    assert _header(answer, "www-authenticate") == (
        'DPoP realm="authz", error="insufficient_scope", error_description="the token lacks a '
        f'required scope", scope="read", algs="{ALGS}"'
    )


def test_the_policy_sets_algorithms_and_window() -> None:
    served = serve(issuer(), policy(dpop={"algorithms": ["EdDSA"], "proofMaxAgeSeconds": 10}))
    answer, _ = _dpop(served)
    assert (answer.status, answer.reason) == (401, "dpop_algorithm_not_allowed")
    assert (_header(answer, "www-authenticate") or "").endswith('algs="EdDSA"')
    ed = DPoPClient("EdDSA")
    token = bearer_token(cnf={"jkt": ed.jkt})
    old = ed.headers(token, htu=f"https://{HOST}/x", iat=NOW - 11)
    assert check(served, path="/x", headers=old)[0].reason == "dpop_proof_expired"
    fresh = ed.headers(token, htu=f"https://{HOST}/x", iat=NOW - 10)
    assert check(served, path="/x", headers=fresh)[0].reason == "allowed"


def test_server_nonces() -> None:
    served = serve(issuer(), policy(dpop={"requireNonce": True}))
    nonces = Nonces(b"n" * 32, clock=lambda: NOW)
    answer, _ = _dpop(served, nonces=nonces)
    assert (answer.status, answer.reason) == (401, "dpop_nonce_required")
    nonce = _header(answer, "dpop-nonce")
    assert nonce is not None and nonces.valid(nonce)
    assert _header(answer, "www-authenticate") == (
        'DPoP realm="authz", error="use_dpop_nonce", error_description="the DPoP proof needs '
        f'the server nonce", algs="{ALGS}"'
    )
    retry = CLIENT.headers(BOUND, htu=f"https://{HOST}/x", nonce=nonce)
    assert check(served, path="/x", headers=retry, nonces=nonces)[0].status == 200
    forged = CLIENT.headers(BOUND, htu=f"https://{HOST}/x", nonce=Nonces(b"m" * 32).current())
    assert check(served, path="/x", headers=forged, nonces=nonces)[0].reason == (
        "dpop_nonce_required"
    )


def test_strip_authorization_removes_the_proof_too() -> None:
    served = serve(issuer(), policy(dpop={}, response={"stripAuthorization": True}))
    answer, _ = _dpop(served)
    assert answer.status == 200
    assert {"authorization", "dpop"} <= set(answer.remove)


def test_the_scheme_must_be_reported() -> None:
    answer, _ = _dpop(connection=KnownConnection())
    assert (answer.status, answer.reason) == (401, "dpop_uri_mismatch")


def test_two_credentials_are_a_bad_request() -> None:
    headers = {**CLIENT.headers(BOUND, htu=f"https://{HOST}/x")}
    headers["authorization"] = f"DPoP {BOUND},Bearer {BOUND}"
    assert check(SERVED, path="/x", headers=headers)[0].status == 400
    empty = {"authorization": "DPoP  ", "dpop": CLIENT.proof(BOUND)}
    assert check(SERVED, path="/x", headers=empty)[0].reason == "request_invalid"


class _Unavailable:
    shared = True

    def first_use(self, key: bytes, iat: float, expires: float, now: float) -> Seen:
        raise ReplayUnavailable("Redis did not answer within 50 ms")


def _shared_pipeline() -> Pipeline:
    # A fake only for a fault a real Redis cannot be made to give on cue in a unit test;
    # tests/e2e/test_dpop_replicas.py stops a real redis-server instead.
    return pipeline(SERVED, TokenCache(), clock=lambda: NOW, replay=_Unavailable())


def test_a_replay_cache_that_cannot_answer_fails_closed_with_503() -> None:
    headers = CLIENT.headers(BOUND, htu=f"https://{HOST}/x")
    view = request_view("GET", HOST, "/x", headers, {}, connection=KnownConnection(scheme="https"))
    answer, outcome = _shared_pipeline().check(view)
    assert (answer.status, answer.reason) == (503, "dpop_replay_unavailable")
    assert _header(answer, "www-authenticate") is None
    assert "50 ms" in outcome.decision.detail


def test_an_event_loop_is_told_to_wait_elsewhere_for_a_shared_replay_cache() -> None:
    headers = CLIENT.headers(BOUND, htu=f"https://{HOST}/x")
    view = request_view("GET", HOST, "/x", headers, {}, connection=KnownConnection(scheme="https"))
    with pytest.raises(WouldWait):
        _shared_pipeline().check(view, may_wait=False)
    # A bearer request on the same pipeline never waits for the replay cache.
    bearer = request_view(
        "GET", HOST, "/x", {"authorization": f"Bearer {bearer_token(scope='read')}"}, {}
    )
    assert _shared_pipeline().check(bearer, may_wait=False)[0].status == 200
