"""A hostile or broken introspection endpoint, and hostile opaque tokens, through the real gRPC
Check API: the exact status and reason, never an allow, never a worker held past the wait
budget, never a token in a log line or a response.

The endpoint is tests/support/introspection_server.py (real HTTP on loopback), made to
answer each row's way: oversized, redirecting to a server this module runs (which must see
nothing), hanging, malformed, or well-formed about a token that must not pass.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from authz.policy.files import DirectorySource, load
from authz.server import policy_store
from tests.support.authz import CheckClient, check_server, header
from tests.support.http_checks import HttpCheckServer, http_check_server
from tests.support.introspection_server import ClientCheck, IntrospectionServer
from tests.support.keyserver import KeyServer
from tests.support.tokens import b64url, compact, mint, signing_key

ISS = "https://opaque.test"
HOST = "api.test"
WAIT_MS = 300
ATTACKER = KeyServer()  # a redirect target: must never receive the token
ENDPOINT = IntrospectionServer(ClientCheck("client_secret_post", "authz", "s3"))


def _active(**members: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"active": True, "iss": ISS, "sub": "svc", "aud": "api", "scope": "read", "iat": now, "exp": now + 300, **members}  # fmt: skip


@dataclass
class Row:
    name: str
    status: int
    reason: str
    answer: Callable[[], dict[str, Any]] | None = None
    fault: dict[str, Any] = field(default_factory=dict)
    token: str = ""
    max_seconds: float = 2.0

    def __post_init__(self) -> None:
        self.token = self.token or f"opaque-{self.name.replace(' ', '-')}.x"


def _redirect(status: int) -> dict[str, Any]:
    return {"status": status, "headers": {"Location": f"{ATTACKER.url}/introspect"}}


def _deep_header_token() -> str:
    """Two dots and a first part that is JSON nested past any recursion limit."""
    return b64url(b"[" * 3000) + ".e30.x"


ROWS = [
    Row("a valid opaque token", 200, "allowed", answer=_active),
    Row(
        "inactive even with admin scope",
        401,
        "token_inactive",
        answer=lambda: {"active": False, "scope": "admin", "sub": "root"},
    ),
    Row("unknown to the provider", 401, "token_inactive"),
    Row(
        "answer about another issuer",
        401,
        "claim_invalid",
        answer=lambda: _active(iss="https://evil.test"),
    ),
    Row(
        "active but expired",
        401,
        "token_expired",
        answer=lambda: _active(exp=int(time.time()) - 120),
    ),
    Row(
        "active for another audience",
        401,
        "audience_mismatch",
        answer=lambda: _active(aud="billing"),
    ),
    Row(
        "active with exp as a string", 401, "claim_invalid", answer=lambda: _active(exp="tomorrow")
    ),
    Row(
        "active with scope as a list", 401, "claim_invalid", answer=lambda: _active(scope=["read"])
    ),
    Row(
        "active without the scope", 403, "insufficient_scope", answer=lambda: _active(scope="write")
    ),
    Row(
        "oversized answer",
        503,
        "introspection_unavailable",
        fault={"body": b'{"active":true,"pad":"' + b"a" * 70_000 + b'"}'},
    ),
    Row("redirect 302 to an attacker", 503, "introspection_unavailable", fault=_redirect(302)),
    Row("redirect 307 to an attacker", 503, "introspection_unavailable", fault=_redirect(307)),
    Row(
        "html login page", 503, "introspection_unavailable", fault={"body": b"<html>sign in</html>"}
    ),
    Row(
        "active as a string", 503, "introspection_unavailable", fault={"body": b'{"active":"true"}'}
    ),
    Row(
        "duplicate active members",
        503,
        "introspection_unavailable",
        fault={"body": b'{"active":false,"active":true}'},
    ),
    Row("NaN exp", 503, "introspection_unavailable", fault={"body": b'{"active":true,"exp":NaN}'}),
    Row(
        "deeply nested answer",
        503,
        "introspection_unavailable",
        fault={"body": b'{"active":true,"x":' + b"[" * 5000 + b"]" * 5000 + b"}"},
    ),
    Row("endpoint error", 503, "introspection_unavailable", fault={"status": 500, "body": b"{}"}),
    Row(
        "client authentication refused",
        503,
        "introspection_unavailable",
        fault={"status": 401, "body": b'{"error":"invalid_client"}'},
    ),
    Row(
        "hanging endpoint",
        503,
        "introspection_unavailable",
        fault={"delay": 3.0},
        max_seconds=(WAIT_MS / 1000) + 0.6,
    ),
    Row(
        "header nested past the recursion limit", 401, "token_inactive", token=_deep_header_token()
    ),
    Row("oversized token", 401, "token_too_large", token="o" * 20_000),
    Row(
        "attacker-signed JWT naming the introspected issuer",
        401,
        "token_inactive",
        token=mint(
            signing_key("ES256", "evil")[0],
            {
                "iss": ISS,
                "sub": "root",
                "aud": "api",
                "scope": "read",
                "exp": int(time.time()) + 600,
            },
        ),
    ),
    Row(
        "unsigned JWT naming the introspected issuer",
        401,
        "token_malformed",
        token=compact({"alg": "none"}, {"iss": ISS, "sub": "root", "scope": "read"}, b""),
    ),
]


def _policy_dir(directory: Path) -> Path:
    (directory / "secret").write_text("s3\n")
    docs = [
        {
            "apiVersion": "authz.io/v1alpha1",
            "kind": "JWTIssuer",
            "metadata": {"name": "opaque", "namespace": "sec"},
            "spec": {
                "issuer": ISS,
                "audiences": ["api"],
                "introspection": {
                    "endpoint": ENDPOINT.url,
                    "allowInsecureHttp": True,
                    "clientAuth": {
                        "method": "client_secret_post",
                        "clientId": "authz",
                        "clientSecretFile": "secret",
                    },
                    "waitMillis": WAIT_MS,
                    "timeoutSeconds": 1,
                    "negativeCacheSeconds": 0,
                    "failureThreshold": 100,  # every row reaches the endpoint
                },
            },
        },
        {
            "apiVersion": "authz.io/v1alpha1",
            "kind": "AuthzPolicy",
            "metadata": {"name": "api", "namespace": "sec"},
            "spec": {
                "targets": {"hosts": [HOST]},
                "issuers": [{"name": "opaque"}],
                "rules": [{"name": "read", "requireScopes": {"allOf": ["read"]}}],
            },
        },
    ]
    (directory / "policies.yaml").write_text(yaml.safe_dump_all(docs))
    return directory


@pytest.fixture(scope="module")
def servers() -> Iterator[None]:
    with ATTACKER, ENDPOINT:
        yield
    assert ATTACKER.total_hits() == 0


@pytest.fixture(scope="module")
def client(servers: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CheckClient]:
    with check_server(_policy_dir(tmp_path_factory.mktemp("introspection-attacks"))) as c:
        assert all(s.accepted and not s.problems for s in c.store.statuses.values())
        yield c


@pytest.fixture(scope="module")
def http_server(
    servers: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HttpCheckServer]:
    """The HTTP transport: its event loop never waits, so every new opaque token takes the
    WouldWait path to the transport's pool and back."""
    store = policy_store({}, threads=4)
    load(DirectorySource(_policy_dir(tmp_path_factory.mktemp("introspection-http"))), store)
    try:
        with http_check_server(store) as server:
            yield server
    finally:
        store.close()


def verdict(response: Any) -> tuple[int, str]:
    if response.status.code == 0:
        return 200, "allowed"
    return response.denied_response.status.code, response.status.message


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_row(client: CheckClient, row: Row) -> None:
    ENDPOINT.fault(**row.fault)
    if row.answer is not None:
        ENDPOINT.answer(row.token, row.answer())
    started = time.monotonic()
    with structlog.testing.capture_logs() as logs:
        response = client.check(headers={"authorization": f"Bearer {row.token}"}, host=HOST)
    elapsed = time.monotonic() - started
    ENDPOINT.fault()
    assert verdict(response) == (row.status, row.reason)
    assert elapsed < row.max_seconds, f"the Check took {elapsed:.2f}s"
    if row.status != 200:
        assert row.token not in response.denied_response.body
        assert row.token not in (header(response, "www-authenticate") or "")
    if row.status == 503:
        assert header(response, "www-authenticate") is None  # retry, not re-authenticate
        assert json.loads(response.denied_response.body)["error"] == "temporarily_unavailable"
    assert row.token not in json.dumps(logs, default=str), "a token reached a log line"
    assert ATTACKER.total_hits() == 0, "the token followed a redirect"


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_row_over_http(http_server: HttpCheckServer, row: Row) -> None:
    token = row.token  # the gRPC rows' store is another one: no answer is shared
    ENDPOINT.fault(**row.fault)
    if row.answer is not None:
        ENDPOINT.answer(token, row.answer())
    before = http_server.decisions(row.reason)
    started = time.monotonic()
    with structlog.testing.capture_logs() as logs:
        response = http_server.request(
            "GET", "/check/envoy/", {"host": HOST, "authorization": f"Bearer {token}"}
        )
    elapsed = time.monotonic() - started
    ENDPOINT.fault()
    assert response.status == row.status
    assert http_server.decisions(row.reason) == before + 1
    assert elapsed < row.max_seconds + 0.5, f"the check took {elapsed:.2f}s"
    if row.status != 200:
        assert token.encode() not in response.body
        assert token not in response.headers.get("www-authenticate", "")
    if row.status == 503:
        assert "www-authenticate" not in response.headers
    assert token not in json.dumps(logs, default=str), "a token reached a log line"
    assert ATTACKER.total_hits() == 0, "the token followed a redirect"


def test_a_hanging_endpoint_holds_no_worker_other_requests_need(client: CheckClient) -> None:
    """Four Check threads; eight new opaque tokens hang at the endpoint. Meanwhile a JWT-free
    request is still answered, and every hanging one gets its 503 within the wait budget."""
    import threading

    ENDPOINT.fault(delay=3.0)
    results: list[tuple[int, str]] = []

    def hang(i: int) -> None:
        token = f"opaque-hang-{i}.x"
        results.append(verdict(client.check(headers={"authorization": f"Bearer {token}"}, host=HOST)))  # fmt: skip

    started = time.monotonic()
    threads = [threading.Thread(target=hang, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    anonymous = verdict(client.check(host=HOST))
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    ENDPOINT.fault()
    assert anonymous == (401, "token_missing")
    assert results == [(503, "introspection_unavailable")] * 8
    assert elapsed < 2 * (WAIT_MS / 1000) + 1.0, f"{elapsed:.2f}s"


def test_row_names_are_unique() -> None:
    assert len({r.name for r in ROWS}) == len(ROWS)
