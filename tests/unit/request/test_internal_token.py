"""Internal tokens through the pipeline: the credential is replaced by a JWT authz signs,
verified here with an independent JOSE library (PyJWT) against authz's published JWKS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt
import pytest

from authz.devtools import generate_key
from authz.keys.signing import SigningKeys
from authz.request.assembly import pipeline
from authz.request.cache import TokenCache
from authz.request.internal_token import InternalTokens, actor
from authz.request.respond import Answer
from authz.request.view import KnownConnection, request_view
from tests.support.docs import issuer, policy, rule
from tests.support.dpop import DPoPClient
from tests.support.snapshots import Served, bearer_token, serve
from tests.support.tokens import ISSUER, NOW

AUTHZ = "https://authz.test"


@pytest.fixture
def keys(tmp_path: Path) -> SigningKeys:
    private, _ = generate_key("ES256", "int-1")
    (tmp_path / "int-1.json").write_text(json.dumps(private))
    return SigningKeys(tmp_path)


def _served(**internal: Any) -> Served:
    return serve(
        issuer(claims={"roles": ["roles"]}),
        policy(
            dpop={},
            internalToken={"audience": "orders", **internal},
            rules=[rule("open", paths=["/open"], action="allowAnonymous"), rule("all")],
        ),
    )


def _check(
    served: Served,
    minter: InternalTokens | None,
    headers: dict[str, str],
    path: str = "/x",
    cache: TokenCache | None = None,
) -> Answer:
    checker = pipeline(served, cache or TokenCache(0), clock=lambda: NOW, internal_tokens=minter)
    view = request_view(
        "GET", "api.example", path, headers, {}, connection=KnownConnection(scheme="https")
    )
    return checker.check(view)[0]


def _verify(keys: SigningKeys, token: str, **options: Any) -> dict[str, Any]:
    jwk = keys.current().jwks()["keys"][0]
    return jwt.decode(
        token,
        jwt.PyJWK(jwk).key,
        algorithms=["ES256"],
        audience="orders",
        issuer=AUTHZ,
        options={"verify_exp": False, "verify_iat": False, **options},
    )


def test_the_credential_is_replaced_by_an_internal_token(keys: SigningKeys) -> None:
    minter = InternalTokens(keys, AUTHZ, clock=lambda: NOW)
    external = bearer_token(scope="read write", roles=["admin"], azp="web-app")
    answer = _check(_served(), minter, {"authorization": f"Bearer {external}"})
    assert answer.status == 200
    value = dict(answer.headers)["authorization"]
    assert value.startswith("Bearer ") and external not in value
    assert "authorization" not in answer.remove  # overwritten, not removed
    claims = _verify(keys, value.removeprefix("Bearer "))
    assert claims["sub"] == "alice" and claims["original_iss"] == ISSUER
    assert claims["scope"] == "read write" and claims["roles"] == ["admin"]
    assert claims["act"] == {"sub": "web-app"}
    assert claims["iat"] == NOW and claims["exp"] == NOW + 300
    assert jwt.get_unverified_header(value.removeprefix("Bearer "))["kid"] == "int-1"


def test_never_outlives_the_external_token(keys: SigningKeys) -> None:
    minter = InternalTokens(keys, AUTHZ, clock=lambda: NOW)
    external = bearer_token(exp=NOW + 30)
    answer = _check(_served(), minter, {"authorization": f"Bearer {external}"})
    token = dict(answer.headers)["authorization"].removeprefix("Bearer ")
    assert _verify(keys, token)["exp"] == NOW + 30


def test_a_cached_credential_signs_nothing_again(keys: SigningKeys) -> None:
    minter = InternalTokens(keys, AUTHZ, clock=lambda: NOW)
    cache = TokenCache()
    headers = {"authorization": f"Bearer {bearer_token()}"}
    first = _check(_served(), minter, headers, cache=cache)
    second = _check(_served(), minter, headers, cache=cache)
    assert dict(first.headers)["authorization"] == dict(second.headers)["authorization"]
    assert minter.signed == 1
    other = _check(_served(), minter, {"authorization": f"Bearer {bearer_token(sub='bob')}"})
    assert dict(other.headers)["authorization"] != dict(first.headers)["authorization"]
    assert minter.signed == 2


def test_reused_for_half_its_lifetime(keys: SigningKeys) -> None:
    now = [float(NOW)]
    minter = InternalTokens(keys, AUTHZ, clock=lambda: now[0])
    headers = {"authorization": f"Bearer {bearer_token(exp=NOW + 3600)}"}
    first = dict(_check(_served(), minter, headers).headers)["authorization"]
    now[0] += 149
    assert dict(_check(_served(), minter, headers).headers)["authorization"] == first
    now[0] += 2
    assert dict(_check(_served(), minter, headers).headers)["authorization"] != first


def test_a_dpop_request_loses_its_proof_upstream(keys: SigningKeys) -> None:
    client = DPoPClient()
    minter = InternalTokens(keys, AUTHZ, clock=lambda: NOW)
    token = bearer_token(cnf={"jkt": client.jkt})
    answer = _check(_served(), minter, client.headers(token, htu="https://api.example/x"))
    assert answer.status == 200 and "dpop" in answer.remove
    assert _verify(keys, dict(answer.headers)["authorization"].removeprefix("Bearer "))


def test_another_header_and_what_a_client_sends_in_it(keys: SigningKeys) -> None:
    minter = InternalTokens(keys, AUTHZ, clock=lambda: NOW)
    served = _served(header="X-Internal-Token")
    external = bearer_token()
    forged = {"authorization": f"Bearer {external}", "x-internal-token": "forged"}
    answer = _check(served, minter, forged)
    assert _verify(keys, dict(answer.headers)["x-internal-token"])
    assert "authorization" in answer.remove  # the external credential does not go on
    anonymous = _check(served, minter, {"x-internal-token": "forged"}, path="/open")
    assert anonymous.status == 200 and "x-internal-token" in anonymous.remove
    assert "x-internal-token" not in dict(anonymous.headers)
    # A request no policy covers (allowed by default) cannot smuggle one either.
    assert "x-internal-token" in served.snapshot.identity_headers


def test_no_signing_key_fails_closed(tmp_path: Path) -> None:
    headers = {"authorization": f"Bearer {bearer_token()}"}
    for minter in (InternalTokens(None, ""), InternalTokens(SigningKeys(tmp_path), AUTHZ)):
        answer = _check(_served(), minter, headers)
        assert (answer.status, answer.reason) == (503, "internal_token_unavailable")
        assert "www-authenticate" not in dict(answer.headers)


def test_an_explanation_mints_nothing() -> None:
    """`authz check` runs the pipeline without a minter: it shows the decision."""
    answer = _check(_served(), None, {"authorization": f"Bearer {bearer_token()}"})
    assert (answer.status, answer.reason) == (200, "allowed")
    assert "authorization" not in dict(answer.headers)


def test_rotation_signs_with_the_new_key_and_publishes_both(
    keys: SigningKeys, tmp_path: Path
) -> None:
    minter = InternalTokens(keys, AUTHZ, clock=lambda: NOW)
    headers = {"authorization": f"Bearer {bearer_token()}"}
    before = dict(_check(_served(), minter, headers).headers)["authorization"]
    private, _ = generate_key("EdDSA", "int-2")
    (tmp_path / "int-2.json").write_text(json.dumps(private))
    assert keys.reload()
    after = dict(_check(_served(), minter, headers).headers)["authorization"]
    assert jwt.get_unverified_header(after.removeprefix("Bearer "))["kid"] == "int-2"
    client = jwt.PyJWKSet.from_dict(keys.current().jwks())
    for value in (before, after):
        token = value.removeprefix("Bearer ")
        kid = jwt.get_unverified_header(token)["kid"]
        key = next(k for k in client.keys if k.key_id == kid)
        jwt.decode(
            token,
            key.key,
            algorithms=["ES256", "EdDSA"],
            audience="orders",
            options={"verify_exp": False, "verify_iat": False},
        )


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        (
            {"sub": "u", "act": {"sub": "svc", "act": {"sub": "gw"}}},
            {"sub": "svc", "act": {"sub": "gw"}},
        ),
        ({"sub": "u", "azp": "app"}, {"sub": "app"}),
        ({"sub": "u", "client_id": "app"}, {"sub": "app"}),
        ({"sub": "app", "client_id": "app"}, None),  # client credentials: no delegation
        ({"sub": "u"}, None),
        ({"sub": "u", "act": "x", "azp": 5}, None),
    ],
)
def test_actor(claims: dict[str, Any], expected: dict[str, Any] | None) -> None:
    assert actor(claims) == expected
