"""Opaque tokens over the Check API: what a client and the upstream see for each answer the
issuer's introspection endpoint (a real local one) gives, or fails to give."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import hashes

from authz.introspection.manager import IntrospectionManager
from authz.keys.thumbprint import b64url
from authz.request.pipeline import WouldWait
from authz.request.view import KnownConnection
from tests.support.docs import issuer, jwks_of, policy, rule
from tests.support.introspection_server import ClientCheck, IntrospectionServer
from tests.support.pki import CA, pem_cert
from tests.support.snapshots import Served, bearer_token, check, serve
from tests.support.tokens import AUDIENCE, ISSUER, NOW

OPAQUE = "ory_at_Zm9vYmFy.c2lnbmF0dXJl"


def active(**members: Any) -> dict[str, Any]:
    return {
        "active": True,
        "iss": ISSUER,
        "sub": "batch-job",
        "client_id": "batch",
        "scope": "orders:read",
        "aud": [AUDIENCE],
        "iat": NOW - 10,
        "exp": NOW + 600,
        **members,
    }


@pytest.fixture
def endpoint() -> Iterator[IntrospectionServer]:
    with IntrospectionServer(ClientCheck("client_secret_post", "authz", "s3")) as server:
        server.answer(OPAQUE, active())
        yield server


@pytest.fixture
def manager() -> Iterator[IntrospectionManager]:
    made = IntrospectionManager()
    yield made
    made.close()


@pytest.fixture
def secret(tmp_path: Path) -> str:
    (tmp_path / "secret").write_text("s3\n")
    return str(tmp_path / "secret")


def introspecting(url: str, secret: str, name: str = "idp", **spec: Any) -> dict[str, Any]:
    """An issuer whose opaque tokens go to `url` (and which also trusts the test key)."""
    block = {
        "endpoint": url,
        "allowInsecureHttp": True,
        "clientAuth": {
            "method": "client_secret_post",
            "clientId": "authz",
            "clientSecretFile": secret,
        },
        **spec.pop("introspection", {}),
    }
    return issuer(name, introspection=block, **({"jwks": jwks_of()} | spec))


def served(
    manager: IntrospectionManager, *docs: dict[str, Any], rules: list[dict[str, Any]] | None = None
) -> Served:
    rules = rules or [
        rule("read", paths=["/orders"], requireScopes={"allOf": ["orders:read"]}),
        rule("write", paths=["/orders/new"], requireScopes={"allOf": ["orders:write"]}),
    ]
    return serve(*docs, policy(rules=rules), introspection=manager)


def test_an_active_opaque_token_is_an_identity_like_a_jwt(
    endpoint: IntrospectionServer, manager: IntrospectionManager, secret: str
) -> None:
    snapshot = served(manager, introspecting(endpoint.url, secret))
    answer, outcome = check(snapshot, path="/orders", token=OPAQUE)
    assert (answer.status, answer.reason) == (200, "allowed")
    assert dict(answer.headers) == {"x-auth-subject": "batch-job", "x-auth-issuer": ISSUER}
    assert dict(answer.metadata)["scopes"] == ("orders:read",)
    assert outcome.verified is not None and outcome.verified.keys is None
    denied, _ = check(snapshot, path="/orders/new", token=OPAQUE)
    assert denied.status == 403
    assert dict(denied.headers)["www-authenticate"] == (
        'Bearer realm="authz", error="insufficient_scope", '
        'error_description="the token lacks a required scope", scope="orders:write"'
    )
    assert endpoint.calls[OPAQUE] == 1
    assert endpoint.requests[0].form["client_secret"] == ["s3"]


def test_an_inactive_token_is_a_401_invalid_token(
    endpoint: IntrospectionServer, manager: IntrospectionManager, secret: str
) -> None:
    snapshot = served(manager, introspecting(endpoint.url, secret))
    answer, outcome = check(snapshot, path="/orders", token="ory_at_revoked.x")
    assert (answer.status, outcome.decision.reason) == (401, "token_inactive")
    assert dict(answer.headers)["www-authenticate"] == (
        'Bearer realm="authz", error="invalid_token", error_description="the token is not active"'
    )


def test_an_endpoint_outage_is_a_503_without_a_challenge(
    endpoint: IntrospectionServer, manager: IntrospectionManager, secret: str
) -> None:
    endpoint.fault(status=500)
    snapshot = served(manager, introspecting(endpoint.url, secret))
    answer, outcome = check(snapshot, path="/orders", token=OPAQUE)
    assert (answer.status, outcome.decision.reason) == (503, "introspection_unavailable")
    assert "www-authenticate" not in dict(answer.headers)
    assert json.loads(answer.body) == {
        "error": "temporarily_unavailable",
        "error_description": "the token could not be checked; try again",
    }
    assert "HTTP 500" in outcome.decision.detail and OPAQUE not in outcome.decision.detail


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ({"aud": ["someone-else"]}, "audience_mismatch"),
        ({"aud": None}, "audience_mismatch"),
        ({"iss": "https://other.test"}, "claim_invalid"),
        ({"exp": NOW - 61}, "token_expired"),
        ({"nbf": NOW + 120}, "token_not_yet_valid"),
        ({"scope": ["orders:read"]}, "claim_invalid"),
    ],
)
def test_an_active_answer_is_checked_as_a_jwt_would_be(
    endpoint: IntrospectionServer,
    manager: IntrospectionManager,
    secret: str,
    members: dict[str, Any],
    reason: str,
) -> None:
    answer_doc = {k: v for k, v in active(**members).items() if v is not None}
    endpoint.answer(OPAQUE, answer_doc)
    snapshot = served(manager, introspecting(endpoint.url, secret))
    answer, outcome = check(snapshot, path="/orders", token=OPAQUE)
    assert (answer.status, outcome.decision.reason) == (401, reason)


def test_client_id_and_other_members_feed_claim_conditions(
    endpoint: IntrospectionServer, manager: IntrospectionManager, secret: str
) -> None:
    endpoint.answer("ory_at_other.y", active(client_id="intruder"))
    snapshot = served(
        manager,
        introspecting(endpoint.url, secret),
        rules=[rule("batch", claims=[{"path": "client_id", "equals": "batch"}])],
    )
    assert check(snapshot, token=OPAQUE)[0].status == 200
    answer, outcome = check(snapshot, token="ory_at_other.y")
    assert (answer.status, outcome.decision.reason) == (403, "claim_mismatch")


def test_jwts_are_verified_with_keys_unless_the_issuer_introspects_them(
    endpoint: IntrospectionServer, manager: IntrospectionManager, secret: str
) -> None:
    jwt_token = bearer_token(scope="orders:read")
    snapshot = served(manager, introspecting(endpoint.url, secret))
    assert check(snapshot, path="/orders", token=jwt_token)[0].status == 200
    assert endpoint.calls[jwt_token] == 0
    everything = served(
        manager, introspecting(endpoint.url, secret, introspection={"tokens": "all"})
    )
    answer, outcome = check(everything, path="/orders", token=jwt_token)
    assert (answer.status, outcome.decision.reason) == (401, "token_inactive")  # revoked there
    assert endpoint.calls[jwt_token] == 1
    endpoint.answer(jwt_token, active(sub="alice"))
    answer, _ = check(everything, path="/orders", token=jwt_token, now=NOW + 5)  # not cached
    assert answer.status == 200 and dict(answer.headers)["x-auth-subject"] == "alice"


def test_an_issuer_of_opaque_tokens_only_introspects_its_jwts(
    endpoint: IntrospectionServer, manager: IntrospectionManager, secret: str
) -> None:
    only = introspecting(endpoint.url, secret)
    del only["spec"]["jwks"]
    snapshot = served(manager, only)
    assert snapshot.statuses["JWTIssuer/default/idp"].accepted
    assert check(snapshot, path="/orders", token=OPAQUE)[0].status == 200
    signed = bearer_token(scope="orders:read")
    answer, outcome = check(snapshot, path="/orders", token=signed)
    assert (answer.status, outcome.decision.reason) == (401, "token_inactive")
    assert endpoint.calls[signed] == 1


def test_opaque_tokens_go_to_the_first_introspecting_issuer_only(
    endpoint: IntrospectionServer, manager: IntrospectionManager, secret: str
) -> None:
    with IntrospectionServer(ClientCheck("none")) as second:
        docs = [
            introspecting(endpoint.url, secret),
            issuer(
                "other",
                "https://other.test",
                introspection={
                    "endpoint": second.url,
                    "allowInsecureHttp": True,
                    "clientAuth": {"method": "none"},
                },
            ),
        ]
        snapshot = serve(
            *docs, policy(issuers=["idp", "other"], rules=[rule("r")]), introspection=manager
        )
        assert check(snapshot, token=OPAQUE)[0].status == 200
        assert second.calls[OPAQUE] == 0  # never handed to another provider
        problems = snapshot.statuses["AuthzPolicy/default/api"].problems
        assert any("JWTIssuer/default/other introspects too" in p for p in problems)


def test_an_event_loop_is_told_to_check_again_where_it_may_wait(
    endpoint: IntrospectionServer, manager: IntrospectionManager, secret: str
) -> None:
    endpoint.fault(delay=0.2)
    snapshot = served(manager, introspecting(endpoint.url, secret))
    with pytest.raises(WouldWait):
        check(snapshot, path="/orders", token=OPAQUE, may_wait=False)
    assert check(snapshot, path="/orders", token=OPAQUE)[0].status == 200
    assert endpoint.calls[OPAQUE] == 1


def test_an_oversized_token_is_not_sent_anywhere(
    endpoint: IntrospectionServer, manager: IntrospectionManager, secret: str
) -> None:
    snapshot = served(manager, introspecting(endpoint.url, secret))
    answer, outcome = check(snapshot, path="/orders", token="o" * 20_000)
    assert (answer.status, outcome.decision.reason) == (401, "token_too_large")
    assert endpoint.requests == []


def test_an_introspection_denial_is_explained_by_the_endpoints_state(
    endpoint: IntrospectionServer, manager: IntrospectionManager, secret: str
) -> None:
    """`authz check` and /debug/explain: the endpoint and how calls went, never the token."""
    from authz.request.assembly import pipeline
    from authz.request.cache import TokenCache
    from authz.request.explain import explain

    endpoint.fault(status=500)
    only = introspecting(endpoint.url, secret)
    del only["spec"]["jwks"]
    snapshot = served(manager, only)
    out = explain(
        pipeline(snapshot, TokenCache(0), clock=lambda: NOW),
        method="GET",
        host="api.example",
        path="/orders",
        headers={},
        context={},
        token=OPAQUE,
        problems=[],
    )
    assert (out["status"], out["reason"]) == (503, "introspection_unavailable")
    assert out["issuer"] == {
        "id": "JWTIssuer/default/idp",
        "iss": "https://issuer.test",
        "introspection": {
            "endpoint": endpoint.url,
            "calls": {"http_status": 1},
            "circuitOpen": False,
            "lastError": f"http_status: {endpoint.url}: HTTP 500",
        },
    }
    assert OPAQUE not in json.dumps(out)


def test_a_key_bound_answer_binds_the_opaque_token_as_a_jwt_would(
    endpoint: IntrospectionServer, manager: IntrospectionManager, secret: str
) -> None:
    """RFC 8705 3.2 and RFC 9449 6.2: the answer's `cnf` binds the token. A DPoP-bound one
    sent as a bearer token is refused (section 7.2); a certificate-bound one needs the
    connection to present that certificate."""
    ca = CA.create("clients")
    _, alice = ca.client("alice")
    alice_pem = pem_cert(alice).decode()
    x5t = b64url(alice.fingerprint(hashes.SHA256()))
    endpoint.answer(
        "ory_at_dpop.y", active(cnf={"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"})
    )
    endpoint.answer("ory_at_cert.y", active(cnf={"x5t#S256": x5t}))
    snapshot = served(manager, introspecting(endpoint.url, secret))
    answer, _ = check(snapshot, path="/orders", token="ory_at_dpop.y")
    assert (answer.status, answer.reason) == (401, "dpop_bound_as_bearer")
    answer, _ = check(snapshot, path="/orders", token="ory_at_cert.y")
    assert (answer.status, answer.reason) == (401, "certificate_missing")
    on_alice = KnownConnection(scheme="https", peer_certificate=quote(alice_pem, safe=""))
    answer, outcome = check(snapshot, path="/orders", token="ory_at_cert.y", connection=on_alice)
    assert (answer.status, answer.reason) == (200, "allowed")
    assert outcome.authentication is not None and outcome.authentication.binding == "x5t#S256"
