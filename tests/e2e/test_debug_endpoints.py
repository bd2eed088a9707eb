"""`authz serve --debug-endpoints` and `authz check --server`: the running server explains a
decision exactly as `authz check --policy-dir` does offline, and never logs the token."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from authz.devtools import generate_key, mint_token
from tests.e2e.conftest import AuthzFactory
from tests.e2e.test_cli import authz
from tests.e2e.test_envoy_flows import ISS, _write_policies
from tests.support.procs import http_request

SAME = ("decision", "status", "reason", "policy", "rule", "subject", "scopes", "www_authenticate")


@pytest.fixture(scope="module")
def keys() -> tuple[dict[str, Any], dict[str, Any]]:
    return generate_key("ES256", "dbg-1")


def token(keys: Any, scope: str) -> str:
    now = int(time.time())
    claims = {"iss": ISS, "sub": "alice", "aud": "orders-api", "iat": now, "exp": now + 300}
    return mint_token(keys[0], {**claims, "scope": scope})


@pytest.mark.parametrize("scope", ["orders.read", "other"])
def test_server_explains_like_the_offline_check(
    tmp_path: Path, authz_server: AuthzFactory, keys: Any, scope: str
) -> None:
    _write_policies(tmp_path, keys[1])
    server = authz_server(tmp_path, extra_args=["--debug-endpoints"])
    value = token(keys, scope)
    args = ("--host", "api.example", "--path", "/orders/7")
    online = authz("check", "--server", server.http_url, *args, env={"AUTHZ_TOKEN": value})
    offline = authz("check", "--policy-dir", str(tmp_path), *args, env={"AUTHZ_TOKEN": value})
    assert online.returncode == offline.returncode == (0 if scope == "orders.read" else 1)
    remote, local = json.loads(online.stdout), json.loads(offline.stdout)
    assert {k: remote.get(k) for k in SAME} == {k: local.get(k) for k in SAME}
    assert remote["issuer"]["id"] == local["issuer"]["id"] == "JWTIssuer/default/demo"
    assert remote["issuer"]["keys"]["ready"] is True
    snapshot = http_request(server.http_url, "GET", "/debug/snapshot").json()
    assert snapshot["version"] == remote["snapshot"] == 1
    assert {p["id"] for p in snapshot["policies"]} >= {"AuthzPolicy/default/orders"}
    assert [i["id"] for i in snapshot["issuers"]] == ["JWTIssuer/default/demo"]
    assert value not in server.process.output() and value.split(".")[2] not in online.stdout


def test_off_by_default(tmp_path: Path, authz_server: AuthzFactory, keys: Any) -> None:
    _write_policies(tmp_path, keys[1])
    server = authz_server(tmp_path)
    assert http_request(server.http_url, "GET", "/debug/snapshot").status == 404
    result = authz("check", "--server", server.http_url)
    assert result.returncode == 2 and "--debug-endpoints" in result.stderr
