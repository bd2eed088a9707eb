"""The token endpoint client: how the client authenticates and what a response must be.
The grants themselves run against Hydra in the end-to-end tests and against the scripted
provider in tests/unit/request/login."""

from __future__ import annotations

import base64
import hashlib

import jwt
import pytest

from authz.keys.fetch import FetchError
from authz.oidc.http import HttpSettings
from authz.oidc.tokens import ASSERTION_TYPE, ClientAuth, GrantRefused, redeem, refresh, token_set
from tests.support.oidc_provider import ScriptedProvider
from tests.support.tokens import signing_key


def test_client_secret_basic_form_encodes_both_parts() -> None:
    form: dict[str, str] = {}
    headers: dict[str, str] = {}
    ClientAuth("web app", "client_secret_basic", secret="p@ss:word").apply(
        "https://t", form, headers
    )
    assert form == {}
    pair = base64.b64decode(headers["Authorization"].removeprefix("Basic ")).decode()
    assert pair == "web%20app:p%40ss%3Aword"  # RFC 6749 2.3.1


def test_client_secret_post_puts_it_in_the_form() -> None:
    form: dict[str, str] = {}
    ClientAuth("web", "client_secret_post", secret="s").apply("https://t", form, {})
    assert form == {"client_id": "web", "client_secret": "s"}


def test_private_key_jwt_signs_an_assertion_for_the_endpoint() -> None:
    private, public = signing_key("ES256", "client-key")
    key = jwt.PyJWK(private)
    client = ClientAuth(
        "web", "private_key_jwt", signing_key=key.key, signing_alg="ES256", signing_kid="client-key"
    )
    form: dict[str, str] = {}
    client.apply("https://op.example/token", form, {})
    assert form["client_assertion_type"] == ASSERTION_TYPE and form["client_id"] == "web"
    assertion = form["client_assertion"]
    assert jwt.get_unverified_header(assertion)["kid"] == "client-key"
    claims = jwt.decode(
        assertion, jwt.PyJWK(public).key, algorithms=["ES256"], audience="https://op.example/token"
    )
    assert claims["iss"] == claims["sub"] == "web"
    assert claims["exp"] - claims["iat"] == 60 and len(claims["jti"]) >= 20
    assert "secret" not in repr(client) and "signing_key=" not in repr(client)


def test_a_token_response_must_be_one() -> None:
    tokens = token_set(
        {"access_token": "a", "token_type": "Bearer", "expires_in": 3599.0, "scope": "openid"}
    )
    assert (tokens.expires_in, tokens.refresh_token, tokens.id_token) == (3599, None, None)
    assert "'a'" not in repr(tokens)
    with pytest.raises(FetchError):
        token_set({"token_type": "Bearer"})


def test_grants_against_a_provider() -> None:
    with ScriptedProvider() as op:
        op.register("web", "s")
        client = ClientAuth("web", "client_secret_basic", secret="s")
        http = HttpSettings(timeout=2, allow_http=True)
        code = op.issue(client_id="web", sub="alice", nonce="n", challenge="x")
        with pytest.raises(GrantRefused) as refused:  # wrong PKCE verifier
            redeem(
                f"{op.issuer}/token", client, code=code, verifier="v", redirect_uri="r", http=http
            )
        assert (refused.value.status, refused.value.error) == (400, "invalid_grant")
        verifier = "a" * 43
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        code = op.issue(client_id="web", sub="alice", nonce="n", challenge=challenge)
        tokens = redeem(
            f"{op.issuer}/token", client, code=code, verifier=verifier, redirect_uri="r", http=http
        )
        assert tokens.id_token is not None and tokens.refresh_token is not None
        renewed = refresh(f"{op.issuer}/token", client, tokens.refresh_token, http)
        assert renewed.refresh_token != tokens.refresh_token
        with pytest.raises(GrantRefused):  # rotated: the old one is spent
            refresh(f"{op.issuer}/token", client, tokens.refresh_token, http)
        wrong = ClientAuth("web", "client_secret_basic", secret="nope")
        with pytest.raises(GrantRefused) as unknown:
            refresh(f"{op.issuer}/token", wrong, renewed.refresh_token or "", http)
        assert unknown.value.status == 401 and unknown.value.error == "invalid_client"
        op.down = True
        with pytest.raises(FetchError):
            refresh(f"{op.issuer}/token", client, renewed.refresh_token or "", http)
    with pytest.raises(FetchError):  # nobody listens any more
        refresh(f"{op.issuer}/token", client, "x", http)
