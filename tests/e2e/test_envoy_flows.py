"""End to end: client -> real Envoy (ext_authz filter) -> `authz serve` -> echo upstream.

Asserts what a client and the upstream actually see: status codes, the
WWW-Authenticate challenge, the JSON error body and the identity headers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.devtools import generate_key, mint_token
from tests.e2e.conftest import EnvoyStack, EnvoyStackFactory

ISS = "https://idp.e2e.test"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"


def _write_policies(directory: Path, public: dict[str, Any]) -> None:
    for path in EXAMPLES.glob("*.yaml"):
        text = path.read_text().replace("https://demo.authz.local", ISS)
        (directory / path.name).write_text(text)
    (directory / "jwks.json").write_text(json.dumps({"keys": [public]}))
    bound = {
        "apiVersion": "authz.io/v1alpha1",
        "kind": "AuthzPolicy",
        "metadata": {"name": "bound", "namespace": "default"},
        "spec": {
            "targets": {"contextExtensions": {"policy": "bound"}},
            "issuers": [{"name": "demo"}],
            "audiences": ["bound-api"],
            "rules": [{"name": "admins", "requireRoles": {"allOf": ["admin"]}}],
        },
    }
    (directory / "bound.yaml").write_text(yaml.safe_dump(bound))


@pytest.fixture(scope="module")
def keys() -> tuple[dict[str, Any], dict[str, Any]]:
    return generate_key("ES256", "e2e-1")


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    envoy_stack_module: EnvoyStackFactory,
    keys: tuple[dict[str, Any], dict[str, Any]],
) -> EnvoyStack:
    directory = tmp_path_factory.mktemp("policies")
    _write_policies(directory, keys[1])
    return envoy_stack_module(directory)


def token(keys: tuple[dict[str, Any], dict[str, Any]], ttl: int = 300, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISS, "sub": "alice", "aud": "orders-api", "iat": now, "exp": now + ttl}
    body.update(claims)
    return mint_token(keys[0], body)


def test_no_token_gets_a_bare_bearer_challenge(stack: EnvoyStack) -> None:
    response = stack.get("/orders/1")
    assert response.status == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="authz"'
    assert response.json() == {
        "error": "unauthorized",
        "error_description": "a bearer token is required",
    }


def test_valid_token_reaches_upstream_with_identity(stack: EnvoyStack, keys: Any) -> None:
    value = token(keys, scope="orders.read")
    response = stack.get("/orders/1", token=value)
    assert response.status == 200
    seen = response.json()["headers"]
    assert seen["x-auth-subject"] == "alice"
    assert seen["x-auth-issuer"] == ISS
    assert seen["x-auth-scopes"] == "orders.read"
    assert "authorization" not in seen  # stripAuthorization


def test_spoofed_identity_header_never_reaches_upstream(stack: EnvoyStack) -> None:
    response = stack.get("/healthz", x_auth_subject="root")
    assert response.status == 200
    assert "x-auth-subject" not in response.json()["headers"]


def test_invalid_and_expired_tokens(stack: EnvoyStack, keys: Any) -> None:
    for value, description in (
        ("abc.def", "the token is malformed"),
        (token(keys, ttl=-3600), "the token has expired"),
        (token(keys, aud="other-api"), "the token audience is not accepted"),
        (
            token(generate_key("ES256", "e2e-1"), scope="orders.read"),
            "the token signature is invalid",
        ),
    ):
        response = stack.get("/orders/1", token=value)
        assert response.status == 401, description
        assert response.headers["www-authenticate"] == (
            f'Bearer realm="authz", error="invalid_token", error_description="{description}"'
        )
        assert value not in response.body.decode()


def test_insufficient_scope(stack: EnvoyStack, keys: Any) -> None:
    value = token(keys, scope="orders.read")
    response = stack.request("POST", "/orders", {"authorization": f"Bearer {value}"}, body=b"{}")
    assert response.status == 403
    assert response.headers["www-authenticate"] == (
        'Bearer realm="authz", error="insufficient_scope", '
        'error_description="the token lacks a required scope", scope="orders.write"'
    )
    assert response.json()["error"] == "insufficient_scope"


def test_unlisted_route_is_denied(stack: EnvoyStack, keys: Any) -> None:
    response = stack.get("/internal/x", token=token(keys, scope="orders.read"))
    assert response.status == 403
    assert "www-authenticate" not in response.headers
    assert response.json()["error"] == "access_denied"


def test_two_tokens_are_a_bad_request(stack: EnvoyStack, keys: Any) -> None:
    value = token(keys, scope="orders.read")
    response = stack.request(
        "GET", "/orders/1", {"authorization": f"Bearer {value}, Bearer {value}"}
    )
    assert response.status == 400
    assert 'error="invalid_request"' in response.headers["www-authenticate"]


def test_route_bound_by_context_extension(stack: EnvoyStack, keys: Any) -> None:
    plain = token(keys, aud="bound-api")
    assert stack.get("/bound/x", token=plain).status == 403
    admin = token(keys, aud="bound-api", realm_access={"roles": ["admin"]})
    assert stack.get("/bound/x", token=admin).status == 200
    # the orders policy (host "*") would refuse this audience: the binding chose the policy
    assert stack.get("/orders/1", token=admin).status == 401


def test_hot_reload_through_envoy(
    tmp_path: Path, envoy_stack: EnvoyStackFactory, keys: Any
) -> None:
    _write_policies(tmp_path, keys[1])
    live = envoy_stack(tmp_path)
    value = token(keys, scope="orders.read")
    assert live.get("/orders/1", token=value).status == 200
    policy = tmp_path / "orders.yaml"
    tightened = policy.read_text().replace(
        "allOf: [orders.read]", "allOf: [orders.read, orders.audit]"
    )
    started = time.monotonic()
    policy.write_text(tightened)
    while live.get("/orders/1", token=value).status != 403:
        assert time.monotonic() - started < 1.0, "policy change not enforced within 1 s"
        time.sleep(0.02)
    # a broken edit keeps the last good version: still 403, never open, never 5xx
    policy.write_text("kind: [unclosed")
    time.sleep(0.6)
    assert live.get("/orders/1", token=value).status == 403
    assert live.get("/orders/1", token=token(keys, scope="orders.read orders.audit")).status == 200


def test_authz_over_unix_socket(tmp_path: Path, envoy_stack: EnvoyStackFactory, keys: Any) -> None:
    _write_policies(tmp_path, keys[1])
    live = envoy_stack(tmp_path, grpc_unix=True)
    assert live.get("/orders/1").status == 401
    assert live.get("/orders/1", token=token(keys, scope="orders.read")).status == 200


def test_authz_down_fails_closed(tmp_path: Path, envoy_stack: EnvoyStackFactory, keys: Any) -> None:
    _write_policies(tmp_path, keys[1])
    live = envoy_stack(tmp_path)
    live.authz.process.stop()
    response = live.get("/orders/1", token=token(keys, scope="orders.read"))
    assert response.status == 503  # status_on_error: never forwarded to the upstream
    assert "headers" not in response.body.decode()


def test_a_rule_on_the_source_address(stack: EnvoyStack) -> None:
    """The example's ops rule: Envoy reports the connection's address (loopback here) and
    no token is needed, whatever X-Forwarded-For the client sends."""
    response = stack.get("/ops/status", x_forwarded_for="203.0.113.1")
    assert response.status == 200
    assert "x-auth-subject" not in response.json()["headers"]
