"""The token endpoint client: what a response must be, and the grants against a provider (how
the client authenticates: tests/unit/keys/test_client_auth.py). The grants themselves run against Hydra in the end-to-end tests and against the scripted
provider in tests/unit/request/login."""

from __future__ import annotations

import base64
import hashlib

import pytest

from authz.keys.client_auth import ClientAuth, InlineSecret
from authz.keys.fetch import FetchError
from authz.oidc.http import HttpSettings
from authz.oidc.tokens import GrantRefused, redeem, refresh, token_set
from tests.support.oidc_provider import ScriptedProvider


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
        client = ClientAuth("client_secret_basic", "web", InlineSecret(b"s"))
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
        wrong = ClientAuth("client_secret_basic", "web", InlineSecret(b"nope"))
        with pytest.raises(GrantRefused) as unknown:
            refresh(f"{op.issuer}/token", wrong, renewed.refresh_token or "", http)
        assert unknown.value.status == 401 and unknown.value.error == "invalid_client"
        op.down = True
        with pytest.raises(FetchError):
            refresh(f"{op.issuer}/token", client, renewed.refresh_token or "", http)
    with pytest.raises(FetchError):  # nobody listens any more
        refresh(f"{op.issuer}/token", client, "x", http)
