"""The two transports decide alike: for the same requests, gRPC and HTTP checks give the same
status, challenge, body, identity headers and removals, and write the same audit lines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs

from authz.policy.files import DirectorySource, load
from authz.server import policy_store
from tests.support.authz import CheckClient, check_server, header
from tests.support.docs import issuer, policy, rule
from tests.support.http_checks import HttpCheckServer, http_check_server
from tests.support.snapshots import bearer_token
from tests.support.tokens import NOW

HOST = "api.example"
READ = bearer_token(scope="orders.read", email="alice@example.com")
REQUESTS: list[tuple[str, str, dict[str, str]]] = [
    ("GET", "/orders/1", {"authorization": f"Bearer {READ}"}),
    ("GET", "/orders/1?page=2", {"authorization": f"Bearer {READ}", "x-auth-subject": "root"}),
    ("POST", "/orders", {"authorization": f"Bearer {READ}"}),
    ("GET", "/orders/1", {}),
    ("GET", "/orders/1", {"authorization": "Bearer not.a.jwt"}),
    ("GET", "/orders/1", {"authorization": f"Bearer {READ}, Bearer {READ}"}),
    ("GET", "/healthz", {"x-auth-subject": "root"}),
    ("DELETE", "/internal", {"authorization": f"Bearer {READ}"}),
    ("GET", "/a/../orders//1", {"authorization": f"Bearer {READ}"}),
]
DOCS = [
    issuer(claims={"scopes": ["scope"]}),
    policy(
        rules=[
            rule("health", paths=["/healthz"], action="allowAnonymous"),
            rule("read", paths=["/orders/**"], methods=["GET"], requireScopes={"allOf": ["orders.read"]}),
            rule("write", paths=["/orders"], methods=["POST"], requireScopes={"allOf": ["orders.write"]}),
        ],
        defaultAction="deny",
        response={
            "headers": [
                {"name": "x-auth-subject", "claim": "sub"},
                {"name": "x-auth-email", "claim": "email"},
                {"name": "x-auth-scopes", "claim": "$scopes"},
                {"name": "x-auth-team", "claim": "team"},
            ],
            "stripAuthorization": True,
        },
    ),
]  # fmt: skip


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[CheckClient, HttpCheckServer]]:
    directory: Path = tmp_path_factory.mktemp("parity")
    (directory / "policies.yaml").write_text(yaml.safe_dump_all(DOCS))
    store = policy_store({}, threads=4)
    load(DirectorySource(directory), store)
    try:
        with (
            check_server(directory, clock=lambda: NOW) as grpc,
            http_check_server(store, clock=lambda: NOW) as http,
        ):
            yield grpc, http
    finally:
        store.close()


def _grpc(client: CheckClient, method: str, path: str, headers: dict[str, str]) -> dict[str, Any]:
    response = client.check(method=method, host=HOST, path=path, headers=headers)
    if response.status.code == 0:
        ok = response.ok_response
        return {
            "status": 200,
            "headers": {o.header.key: o.header.value for o in ok.headers},
            "remove": list(ok.headers_to_remove),
        }
    denied = response.denied_response
    return {
        "status": denied.status.code,
        "challenge": header(response, "www-authenticate"),
        "content_type": header(response, "content-type"),
        "body": denied.body,
    }


def _http(
    server: HttpCheckServer, method: str, path: str, headers: dict[str, str]
) -> dict[str, Any]:
    response = server.request(method, "/check/envoy" + path, {"host": HOST, **headers})
    if response.status == 200:
        removed = response.headers.get("x-envoy-auth-headers-to-remove", "")
        return {
            "status": 200,
            "headers": {k: v for k, v in response.headers.items() if k.startswith("x-auth-")},
            "remove": removed.split(",") if removed else [],
        }
    return {
        "status": response.status,
        "challenge": response.headers.get("www-authenticate"),
        "content_type": response.headers.get("content-type"),
        "body": response.body.decode(),
    }


def _audit(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in line.items() if k != "latency_ms"}
        for line in logs
        if line.get("event") == "decision"
    ]


@pytest.mark.parametrize(("method", "path", "headers"), REQUESTS)
def test_grpc_and_http_checks_answer_and_audit_alike(
    servers: tuple[CheckClient, HttpCheckServer],
    method: str,
    path: str,
    headers: dict[str, str],
) -> None:
    grpc, http = servers
    with capture_logs() as grpc_logs:
        over_grpc = _grpc(grpc, method, path, headers)
    with capture_logs() as http_logs:
        over_http = _http(http, method, path, headers)
    assert over_http == over_grpc
    assert _audit(http_logs) == _audit(grpc_logs) != []
