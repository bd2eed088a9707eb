"""Opaque access tokens from a real Ory Hydra, checked by introspection, end to end.

Hydra v2.3 issues opaque `ory_at_...` tokens for the client credentials grant and answers
RFC 7662 introspection on its admin port without client authentication. So:

- through real Envoy and `authz serve`, authz asks Hydra's admin endpoint directly
  (`method: none`); a token revoked at Hydra (RFC 7009) is refused within the cache bound,
  and an endpoint that cannot be reached is a 503 at the client;
- `client_secret_basic` is enforced by a real NGINX in front of the admin endpoint (an
  `if` on the Authorization header), including a rotated secret file;
- `client_secret_post` and `private_key_jwt` are enforced by the local RFC 7662 endpoint of
  tests/support/introspection_server.py, which verifies the credentials (the assertion
  with PyJWT) and then asks Hydra's admin endpoint, relaying its answer.
"""

from __future__ import annotations

import base64
import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.e2e.conftest import EnvoyStackFactory, HydraFactory, NginxFactory
from tests.support.authz import CheckClient, check_server, header
from tests.support.hydra import Hydra, OAuthClient
from tests.support.introspection_server import ClientCheck, IntrospectionServer
from tests.support.procs import free_port

AUDIENCE = "orders-api"
CACHE_SECONDS = 2


@pytest.fixture(scope="module")
def hydra(hydra_server_module: HydraFactory) -> Hydra:
    return hydra_server_module().hydra


@pytest.fixture(scope="module")
def app(hydra: Hydra) -> OAuthClient:
    return hydra.client_credentials_client(
        scope="orders.read orders.write", audience=[AUDIENCE], name="nightly-import"
    )


def issuer_doc(
    name: str, iss: str, endpoint: str, client_auth: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    introspection = {
        "endpoint": endpoint,
        "allowInsecureHttp": True,  # Hydra --dev and the test proxies speak plain http
        "clientAuth": client_auth,
        "cacheSeconds": CACHE_SECONDS,
        "negativeCacheSeconds": 1,
        "waitMillis": 2000,  # a loaded test machine; the proxy's timeout is longer
        **extra,
    }
    return {
        "apiVersion": "authz.io/v1alpha1",
        "kind": "JWTIssuer",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"issuer": iss, "audiences": [AUDIENCE], "introspection": introspection},
    }


def policy_doc(name: str, issuer: str, hosts: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "authz.io/v1alpha1",
        "kind": "AuthzPolicy",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "targets": {"hosts": hosts},
            "issuers": [{"name": issuer}],
            "rules": [
                {
                    "name": "read",
                    "match": {"methods": ["GET"], "paths": ["/orders/**"]},
                    "requireScopes": {"allOf": ["orders.read"]},
                },
                {
                    "name": "import",
                    "match": {"methods": ["POST"], "paths": ["/orders/import"]},
                    "requireScopes": {"allOf": ["orders.write"]},
                },
            ],
            "response": {
                "headers": [
                    {"name": "x-auth-subject", "claim": "sub"},
                    {"name": "x-auth-client", "claim": "client_id"},
                    {"name": "x-auth-scopes", "claim": "$scopes"},
                ]
            },
        },
    }


def write(directory: Path, *docs: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "policies.yaml").write_text(yaml.safe_dump_all(docs))
    return directory


def test_opaque_tokens_through_envoy_revoked_at_hydra_and_an_outage(
    hydra: Hydra, app: OAuthClient, envoy_stack: EnvoyStackFactory, tmp_path: Path
) -> None:
    admin = f"{hydra.admin}/admin/oauth2/introspect"
    dead = f"http://127.0.0.1:{free_port()}/introspect"  # nothing listens there
    policies = write(
        tmp_path / "policies",
        issuer_doc("hydra", hydra.issuer, admin, {"method": "none"}),
        policy_doc("orders", "hydra", ["*"]),
        issuer_doc("down", "https://down.test", dead, {"method": "none"}, timeoutSeconds=1),
        policy_doc("down", "down", ["down.test"]),
    )
    stack = envoy_stack(policies, timeout_ms=3000)
    token = hydra.client_credentials_token(app, "orders.read", AUDIENCE)
    assert token.startswith("ory_at_")

    first = stack.get("/orders/1", token)
    assert first.status == 200, first.body
    seen = json.loads(first.body)["headers"]
    assert seen["x-auth-subject"] == app.client_id and seen["x-auth-client"] == app.client_id
    assert seen["x-auth-scopes"] == "orders.read"
    for _ in range(20):  # answered from the cache: Hydra is asked once
        assert stack.get("/orders/1", token).status == 200
    denied = stack.request("POST", "/orders/import", {"authorization": f"Bearer {token}"})
    assert denied.status == 403
    assert 'scope="orders.write"' in denied.headers["www-authenticate"]

    # RFC 7009 at Hydra: refused once the cached answer expires (cacheSeconds), no later.
    hydra.revoke(app, token)
    revoked_at = time.monotonic()
    while (answer := stack.get("/orders/1", token)).status == 200:
        assert time.monotonic() - revoked_at < CACHE_SECONDS + 1.5, "revocation not seen"
        time.sleep(0.05)
    seen_after = time.monotonic() - revoked_at
    assert answer.status == 401
    assert 'error="invalid_token"' in answer.headers["www-authenticate"]
    assert json.loads(answer.body)["error_description"] == "the token is not active"

    # An endpoint that cannot answer: Envoy relays authz's 503, no challenge, no allow.
    other = hydra.client_credentials_token(app, "orders.read", AUDIENCE)
    outage = stack.request("GET", "/orders/1", {"authorization": f"Bearer {other}", "host": "down.test"})  # fmt: skip
    assert outage.status == 503, outage.body
    assert "www-authenticate" not in outage.headers
    assert json.loads(outage.body)["error"] == "temporarily_unavailable"
    metrics = stack.authz.metrics()
    assert 'authz_introspection_calls_total{issuer="JWTIssuer/shop/hydra",result="ok"}' in metrics
    assert 'result="connect_error"' in metrics
    assert 'authz_decisions_total{decision="deny",policy="AuthzPolicy/shop/orders",reason="token_inactive"}' in metrics  # fmt: skip
    calls = 'authz_introspection_calls_total{issuer="JWTIssuer/shop/hydra",result="ok"} 2.0'
    assert calls in metrics  # the first token once (21 allowed requests), the revoked one once
    print(
        f"introspection via Envoy: revocation at Hydra seen after {seen_after:.2f} s "
        f"(cacheSeconds {CACHE_SECONDS})"
    )


def _status(client: CheckClient, token: str) -> tuple[int, str]:
    response = client.check(headers={"authorization": f"Bearer {token}"}, path="/orders/1")
    if response.status.code == 0:
        return 200, header(response, "x-auth-client") or ""
    return response.denied_response.status.code, response.status.message


NGINX_SITE = """
    server {{
        listen 127.0.0.1:{port};
        location = /introspect {{
            if ($http_authorization != "{basic}") {{ return 401; }}
            proxy_pass {admin}/admin/oauth2/introspect;
        }}
    }}
"""


def test_client_secret_basic_enforced_by_nginx(
    hydra: Hydra, app: OAuthClient, nginx_server: NginxFactory, tmp_path: Path
) -> None:
    port = free_port()
    basic = "Basic " + base64.b64encode(b"orders-api:s3cret-1").decode()
    nginx = nginx_server(NGINX_SITE.format(port=port, basic=basic, admin=hydra.admin), port=port)
    secret = tmp_path / "policies" / "secret"
    client_auth = {"method": "client_secret_basic", "clientId": "orders-api", "clientSecretFile": "secret"}  # fmt: skip
    policies = write(
        tmp_path / "policies",
        issuer_doc("hydra", hydra.issuer, f"{nginx.url}/introspect", client_auth),
        policy_doc("orders", "hydra", ["*"]),
    )
    secret.write_text("wrong\n")
    with check_server(policies) as client:
        token = hydra.client_credentials_token(app, "orders.read", AUDIENCE)
        assert _status(client, token) == (503, "introspection_unavailable")
        assert '"POST /introspect HTTP/1.1" 401' in (nginx.dir / "access.log").read_text()  # type: ignore[operator]
        secret.write_text("s3cret-1\n")  # the Secret volume rotates: no restart, no reload
        assert _status(client, token) == (200, app.client_id)


@pytest.fixture
def rsa_key(tmp_path: Path) -> Iterator[rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "client.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    yield key


@pytest.mark.parametrize("method", ["client_secret_post", "private_key_jwt"])
def test_post_and_private_key_jwt_enforced_in_front_of_hydra(
    hydra: Hydra, app: OAuthClient, rsa_key: rsa.RSAPrivateKey, tmp_path: Path, method: str
) -> None:
    check = ClientCheck(method, "orders-api", "s3cret-2", public_key=rsa_key.public_key())  # type: ignore[arg-type]
    upstream = f"{hydra.admin}/admin/oauth2/introspect"
    with IntrospectionServer(check, upstream=upstream) as endpoint:
        (tmp_path / "policies" / "secret").write_text("s3cret-2")
        client_auth: dict[str, Any] = {"method": method, "clientId": "orders-api"}
        if method == "private_key_jwt":
            client_auth |= {"privateKeyFile": "client.pem", "keyId": "orders-api-1"}
        else:
            client_auth["clientSecretFile"] = "secret"
        policies = write(
            tmp_path / "policies",
            issuer_doc("hydra", hydra.issuer, endpoint.url, client_auth),
            policy_doc("orders", "hydra", ["*"]),
        )
        timings = []
        with check_server(policies) as client:
            for _ in range(3):  # three tokens: three calls, each freshly authenticated
                token = hydra.client_credentials_token(app, "orders.read", AUDIENCE)
                started = time.perf_counter()
                assert _status(client, token) == (200, app.client_id)
                timings.append((time.perf_counter() - started) * 1000)
                assert _status(client, token) == (200, app.client_id)  # cached: no call
            revoked = hydra.client_credentials_token(app, "orders.read", AUDIENCE)
            hydra.revoke(app, revoked)
            assert _status(client, revoked) == (401, "token_inactive")
        assert [r.authenticated for r in endpoint.requests] == [True] * 4
        if method == "private_key_jwt":
            assertions = [r.form["client_assertion"][0] for r in endpoint.requests]
            assert len(set(assertions)) == 4  # a fresh assertion (and jti) per call
        print(f"{method} in front of Hydra: first Check of a new token {statistics.median(timings):.1f} ms (median of 3)")  # fmt: skip
