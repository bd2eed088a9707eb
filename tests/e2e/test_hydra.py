"""A real OIDC provider: Ory Hydra v2.3.0 issues client_credentials JWT access tokens.

The authorizer finds Hydra's keys by OIDC discovery alone, accepts its tokens with
audience and scope enforcement, and follows a key rotation done through Hydra's
admin API on first use of the new kid. Hydra is built from Go modules into the test
binary cache (tests/support/testbin.py); the first run builds it.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import testbin
from tests.support.authz import CheckClient, check_server, header
from tests.support.procs import Process, free_port, wait_for_http
from tests.support.tokens import b64url_decode

AUDIENCE = "orders-api"


@dataclass(frozen=True)
class Hydra:
    public: str  # http://127.0.0.1:PORT, the issuer
    admin: str

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> Any:
        request = urllib.request.Request(url, body, headers, method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return json.loads(response.read())

    def get(self, url: str) -> Any:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
            return json.loads(response.read())

    def client(self, scope: str, audience: list[str]) -> tuple[str, str]:
        """A client_credentials client (Hydra picks the id); returns (id, secret)."""
        secret = "client-secret-0123456789"
        body = {
            "client_name": "orders-batch",
            "client_secret": secret,
            "grant_types": ["client_credentials"],
            "response_types": ["token"],
            "scope": scope,
            "audience": audience,
            "token_endpoint_auth_method": "client_secret_basic",
            "access_token_strategy": "jwt",
        }
        created = self.post(
            f"{self.admin}/admin/clients",
            json.dumps(body).encode(),
            {"Content-Type": "application/json"},
        )
        return created["client_id"], secret

    def token(self, client: tuple[str, str], scope: str, audience: str) -> str:
        basic = base64.b64encode(
            f"{urllib.parse.quote(client[0])}:{urllib.parse.quote(client[1])}".encode()
        ).decode()
        form = {"grant_type": "client_credentials", "scope": scope, "audience": audience}
        answer = self.post(
            f"{self.public}/oauth2/token",
            urllib.parse.urlencode(form).encode(),
            {
                "Authorization": f"Basic {basic}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        value: str = answer["access_token"]
        return value

    def rotate(self, kid: str) -> None:
        """Add a signing key to the access-token key set: Hydra signs with the newest."""
        self.post(
            f"{self.admin}/admin/keys/hydra.jwt.access-token",
            json.dumps({"alg": "RS256", "kid": kid, "use": "sig"}).encode(),
            {"Content-Type": "application/json"},
        )


@pytest.fixture(scope="module")
def hydra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hydra]:
    binary = testbin.path("hydra")
    public_port, admin_port = free_port(), free_port()
    issuer = f"http://127.0.0.1:{public_port}"
    config = {
        "dsn": "memory",
        "serve": {
            "public": {"host": "127.0.0.1", "port": public_port},
            "admin": {"host": "127.0.0.1", "port": admin_port},
        },
        "urls": {"self": {"issuer": issuer}},
        "strategies": {"access_token": "jwt"},
        "secrets": {"system": ["authz-e2e-system-secret-0123456789"]},
        "sqa": {"opt_out": True},
        "log": {"level": "warn"},
    }
    path = tmp_path_factory.mktemp("hydra") / "hydra.yml"
    path.write_text(yaml.safe_dump(config))
    with Process([binary, "serve", "all", "--dev", "-c", path], name="hydra") as proc:
        wait_for_http(f"{issuer}/health/ready", timeout=60, proc=proc)
        wait_for_http(f"http://127.0.0.1:{admin_port}/health/ready", timeout=60, proc=proc)
        yield Hydra(issuer, f"http://127.0.0.1:{admin_port}")


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
    discovered = hydra.get(f"{hydra.public}/.well-known/openid-configuration")
    issuer = discovered["issuer"]
    app = hydra.client("orders.read orders.write", [AUDIENCE, "billing-api"])
    read = hydra.token(app, "orders.read", AUDIENCE)
    assert _claims(read)["iss"] == issuer and _claims(read)["aud"] == [AUDIENCE]
    with check_server(_policies(tmp_path, issuer)) as client:
        _wait_ready(client)
        state = client.store.key_states()["JWTIssuer/default/hydra"]
        assert state.source == f"discovery {issuer.rstrip('/')}/.well-known/openid-configuration"
        assert _kid(read) in state.kids
        assert _status(client, read) == (200, "allowed", app[0])
        # Valid token, but the POST rule needs orders.write: 403 insufficient_scope.
        assert _status(client, read, "POST", "/orders")[:2] == (403, "insufficient_scope")
        write = hydra.token(app, "orders.write", AUDIENCE)
        assert _status(client, write, "POST", "/orders")[:2] == (200, "allowed")
        assert _status(client, write)[:2] == (403, "insufficient_scope")
        # A token Hydra minted for another API is not accepted here.
        billing = hydra.token(app, "orders.read", "billing-api")
        assert _status(client, billing)[:2] == (401, "audience_mismatch")


def test_hydra_key_rotation_is_followed_on_first_use(hydra: Hydra, tmp_path: Path) -> None:
    issuer = hydra.get(f"{hydra.public}/.well-known/openid-configuration")["issuer"]
    app = hydra.client("orders.read", [AUDIENCE])
    before = hydra.token(app, "orders.read", AUDIENCE)
    with check_server(_policies(tmp_path, issuer)) as client:
        _wait_ready(client)
        assert _status(client, before)[:2] == (200, "allowed")
        hydra.rotate("rotated-1")
        after = hydra.token(app, "orders.read", AUDIENCE)
        assert _kid(after) == "rotated-1" != _kid(before)
        started = time.perf_counter()
        assert _status(client, after)[:2] == (200, "allowed")  # first use, one refetch
        print(
            f"latency: hydra rotation, first use of the new kid: {time.perf_counter() - started:.3f}s"
        )
        state = client.store.key_states()["JWTIssuer/default/hydra"]
        assert "rotated-1" in state.kids and state.unknown_kid_refetches == 1
        assert _status(client, before)[:2] == (200, "allowed")  # the old key is still published
