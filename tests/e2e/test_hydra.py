"""A real OIDC provider: Ory Hydra v2.3.0 issues client_credentials access tokens.

The authorizer finds Hydra's keys by OIDC discovery alone, accepts its JWT access tokens
with audience and scope enforcement, and follows a key rotation done through Hydra's
admin API on first use of the new kid. Opaque tokens (issue 13's introspection) are
proven at Hydra itself: active while valid, inactive once revoked. Hydra is built from Go
modules into the test binary cache (tests/support/testbin.py); the first run builds it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import HydraFactory
from tests.support.authz import CheckClient, check_server, header
from tests.support.hydra import Hydra, HydraError, OAuthClient
from tests.support.tokens import b64url_decode

AUDIENCE = "orders-api"


@pytest.fixture(scope="module")
def hydra(hydra_server_module: HydraFactory) -> Hydra:
    return hydra_server_module().hydra


def _jwt_client(hydra: Hydra, scope: str, audience: list[str]) -> OAuthClient:
    return hydra.client_credentials_client(
        scope=scope, audience=audience, access_token_strategy="jwt", name="orders-batch"
    )


def _part(value: str, index: int) -> dict[str, Any]:
    part: dict[str, Any] = json.loads(b64url_decode(value.split(".")[index]))
    return part


def _claims(value: str) -> dict[str, Any]:
    return _part(value, 1)


def _kid(value: str) -> str:
    kid: str = _part(value, 0)["kid"]
    return kid


def _policies(directory: Path, issuer: str) -> Path:
    docs = [
        {
            "apiVersion": "authz.io/v1alpha1",
            "kind": "JWTIssuer",
            "metadata": {"name": "hydra", "namespace": "default"},
            "spec": {
                "issuer": issuer,
                "discovery": True,
                "algorithms": ["RS256"],
                "fetch": {"allowInsecureHttp": True},  # Hydra --dev serves plain http
            },
        },
        {
            "apiVersion": "authz.io/v1alpha1",
            "kind": "AuthzPolicy",
            "metadata": {"name": "orders", "namespace": "default"},
            "spec": {
                "targets": {"hosts": ["*"]},
                "issuers": [{"name": "hydra"}],
                "audiences": [AUDIENCE],
                "rules": [
                    {
                        "name": "read",
                        "match": {"methods": ["GET"], "paths": ["/orders/**"]},
                        "requireScopes": {"allOf": ["orders.read"]},
                    },
                    {
                        "name": "write",
                        "match": {"methods": ["POST"], "paths": ["/orders"]},
                        "requireScopes": {"allOf": ["orders.write"]},
                    },
                ],
                "response": {"headers": [{"name": "x-auth-subject", "claim": "sub"}]},
            },
        },
    ]
    (directory / "policies.yaml").write_text(yaml.safe_dump_all(docs))
    return directory


def _status(client: CheckClient, value: str, method: str = "GET", path: str = "/orders/1") -> Any:
    response = client.check(headers={"authorization": f"Bearer {value}"}, method=method, path=path)
    if response.status.code == 0:
        return 200, "allowed", header(response, "x-auth-subject")
    return response.denied_response.status.code, response.status.message, None


def _wait_ready(client: CheckClient) -> None:
    deadline = time.monotonic() + 10
    while not client.store.key_states()["JWTIssuer/default/hydra"].ready:
        assert time.monotonic() < deadline, client.store.key_states()
        time.sleep(0.02)


def test_hydra_tokens_with_audience_and_scope(hydra: Hydra, tmp_path: Path) -> None:
    issuer = hydra.discovery()["issuer"]
    app = _jwt_client(hydra, "orders.read orders.write", [AUDIENCE, "billing-api"])
    read = hydra.client_credentials_token(app, "orders.read", AUDIENCE)
    assert _claims(read)["iss"] == issuer and _claims(read)["aud"] == [AUDIENCE]
    with check_server(_policies(tmp_path, issuer)) as client:
        _wait_ready(client)
        state = client.store.key_states()["JWTIssuer/default/hydra"]
        assert state.source == f"discovery {issuer.rstrip('/')}/.well-known/openid-configuration"
        assert _kid(read) in state.kids
        assert _status(client, read) == (200, "allowed", app.client_id)
        # Valid token, but the POST rule needs orders.write: 403 insufficient_scope.
        assert _status(client, read, "POST", "/orders")[:2] == (403, "insufficient_scope")
        write = hydra.client_credentials_token(app, "orders.write", AUDIENCE)
        assert _status(client, write, "POST", "/orders")[:2] == (200, "allowed")
        assert _status(client, write)[:2] == (403, "insufficient_scope")
        # A token Hydra minted for another API is not accepted here.
        billing = hydra.client_credentials_token(app, "orders.read", "billing-api")
        assert _status(client, billing)[:2] == (401, "audience_mismatch")


def test_hydra_key_rotation_is_followed_on_first_use(hydra: Hydra, tmp_path: Path) -> None:
    issuer = hydra.discovery()["issuer"]
    app = _jwt_client(hydra, "orders.read", [AUDIENCE])
    before = hydra.client_credentials_token(app, "orders.read", AUDIENCE)
    with check_server(_policies(tmp_path, issuer)) as client:
        _wait_ready(client)
        assert _status(client, before)[:2] == (200, "allowed")
        hydra.rotate("rotated-1")
        after = hydra.client_credentials_token(app, "orders.read", AUDIENCE)
        assert _kid(after) == "rotated-1" != _kid(before)
        started = time.perf_counter()
        assert _status(client, after)[:2] == (200, "allowed")  # first use, one refetch
        print(
            f"latency: hydra rotation, first use of the new kid: {time.perf_counter() - started:.3f}s"
        )
        state = client.store.key_states()["JWTIssuer/default/hydra"]
        assert "rotated-1" in state.kids and state.unknown_kid_refetches == 1
        assert _status(client, before)[:2] == (200, "allowed")  # the old key is still published


def test_opaque_client_credentials_token_introspects_active_then_revoked(hydra: Hydra) -> None:
    app = hydra.client_credentials_client(scope="orders.read orders.write", audience=[AUDIENCE])
    token = hydra.client_credentials_token(app, "orders.read", AUDIENCE)
    assert token.startswith("ory_at_") and token.count(".") == 1  # not a JWT
    now = time.time()
    answer = hydra.introspect(token)
    assert answer["active"] is True
    assert (answer["client_id"], answer["sub"]) == (app.client_id, app.client_id)
    assert answer["scope"] == "orders.read"  # what was asked for, not all the client may have
    assert answer["aud"] == [AUDIENCE]
    assert answer["iss"] == hydra.issuer
    assert answer["token_use"] == "access_token"
    assert now - 60 < answer["iat"] <= answer["exp"] - 3000  # about an hour by default
    other = hydra.client_credentials_token(app, "orders.write", AUDIENCE)
    hydra.revoke(app, token)  # RFC 7009, on the public port, as the client
    assert hydra.introspect(token) == {"active": False}
    assert hydra.introspect(other)["active"] is True  # only that token
    assert hydra.introspect("ory_at_not-a-token.x") == {"active": False}


def test_revocation_needs_the_clients_own_credentials(hydra: Hydra) -> None:
    app = hydra.client_credentials_client(scope="orders.read", audience=[AUDIENCE])
    token = hydra.client_credentials_token(app, "orders.read", AUDIENCE)
    wrong = OAuthClient(app.client_id, "not-the-secret")
    with pytest.raises(HydraError) as refused:
        hydra.revoke(wrong, token)
    assert refused.value.status == 401
    assert hydra.introspect(token)["active"] is True
