"""The ops port's debug endpoints, in process: off by default, snapshot and explain when on."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from authz import cli
from authz.ops import OpsServer
from authz.policy.files import DirectorySource, load
from authz.policy.store import PolicyStore
from authz.server import debug_handler
from tests.support.procs import free_port, http_request
from tests.support.tokens import AUDIENCE, ISSUER, claims, mint, signing_key

DOCS: list[dict[str, Any]] = [
    {
        "apiVersion": "authz.io/v1alpha1",
        "kind": "JWTIssuer",
        "metadata": {"name": "idp", "namespace": "dbg"},
        "spec": {"issuer": ISSUER, "jwks": {"keys": [signing_key("ES256")[1]]}},
    },
    {
        "apiVersion": "authz.io/v1alpha1",
        "kind": "AuthzPolicy",
        "metadata": {"name": "api", "namespace": "dbg"},
        "spec": {
            "targets": {"hosts": ["api.test", "*.api.test"]},
            "issuers": [{"name": "idp"}],
            "audiences": [AUDIENCE],
            "rules": [{"name": "read", "requireScopes": {"allOf": ["read"]}}],
        },
    },
]


def token(**overrides: Any) -> str:
    now = time.time()
    return mint(signing_key("ES256")[0], claims(iat=int(now), exp=int(now) + 300, **overrides))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PolicyStore]:
    directory = tmp_path_factory.mktemp("debug")
    (directory / "policies.yaml").write_text(yaml.safe_dump_all(DOCS))
    store = PolicyStore()
    load(DirectorySource(directory), store)
    yield store
    store.close()


def ops(debug: Any) -> Iterator[str]:
    server = OpsServer("127.0.0.1:0", lambda: True, debug=debug)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def url(store: PolicyStore) -> Iterator[str]:
    yield from ops(debug_handler(store))


def post(url: str, body: Any) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = http_request(
        url, "POST", "/debug/explain", {"content-type": "application/json"}, body=raw
    )
    return response.status, response.json()


def test_off_unless_enabled() -> None:
    for base in ops(None):
        assert http_request(base, "GET", "/debug/snapshot").status == 404
        assert http_request(base, "POST", "/debug/explain", body=b"{}").status == 404
        assert http_request(base, "GET", "/healthz").status == 200


def test_snapshot_shows_version_policies_and_issuer_keys(url: str, store: PolicyStore) -> None:
    doc = http_request(url, "GET", "/debug/snapshot").json()
    assert doc["version"] == store.snapshot.version and doc["ready"] is True
    [policy] = doc["policies"]
    assert policy["id"] == "AuthzPolicy/dbg/api"
    assert policy["hosts"] == ["api.test", "*.api.test"] and policy["dryRun"] is False
    assert policy["issuers"] == ["JWTIssuer/dbg/idp"]
    assert policy["rules"] == [{"name": "read", "action": "requireToken"}]
    [issuer] = doc["issuers"]
    assert issuer["iss"] == [ISSUER] and issuer["keys"]["ready"] is True
    assert issuer["keys"]["kids"] == ["k1"]


def test_explain_an_allow_and_a_deny(url: str) -> None:
    value = token(scope="read")
    status, out = post(url, {"host": "api.test", "path": "/x", "token": value})
    assert status == 200, out
    assert (out["decision"], out["reason"], out["rule"]) == ("allow", "allowed", "read")
    assert out["issuer"]["id"] == "JWTIssuer/dbg/idp" and out["subject"] == "alice"
    assert value not in json.dumps(out)
    status, out = post(url, {"host": "api.test", "token": token()})
    assert (out["decision"], out["status"], out["reason"]) == ("deny", 403, "insufficient_scope")
    assert out["required_scopes"] == ["read"]
    _, out = post(url, {"host": "api.test", "headers": {"Authorization": "Basic eA=="}})
    assert out["reason"] == "token_missing"


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", {"token": 1}, {"headers": {"a": 1}}, {"method": ["GET"]}],
    ids=["text", "array", "token", "headers", "method"],
)
def test_malformed_explain_is_400(url: str, body: Any) -> None:
    status, out = post(url, body)
    assert status == 400 and "error" in out


def test_body_size_is_bounded(url: str) -> None:
    response = http_request(url, "POST", "/debug/explain", body=b"x" * (65 * 1024))
    assert response.status == 413


def test_explains_do_not_touch_the_serving_cache_or_counters(url: str) -> None:
    before = REGISTRY.get_sample_value(
        "authz_decisions_total",
        {"decision": "allow", "reason": "allowed", "policy": "AuthzPolicy/dbg/api"},
    )
    post(url, {"host": "api.test", "token": token(scope="read")})
    after = REGISTRY.get_sample_value(
        "authz_decisions_total",
        {"decision": "allow", "reason": "allowed", "policy": "AuthzPolicy/dbg/api"},
    )
    assert before == after


def test_authz_check_server_prints_the_servers_explanation(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTHZ_TOKEN", token(scope="read"))
    assert cli.main(["check", "--server", url, "--host", "api.test", "--path", "/a"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["decision"] == "allow" and out["policy"] == "AuthzPolicy/dbg/api"
    monkeypatch.delenv("AUTHZ_TOKEN")
    assert cli.main(["check", "--server", url, "--host", "api.test"]) == 1
    assert json.loads(capsys.readouterr().out)["reason"] == "token_missing"


def test_authz_check_server_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", "--server", f"http://127.0.0.1:{free_port()}"]) == 2
    assert "authz check" in capsys.readouterr().err


def test_check_needs_a_policy_dir_or_a_server(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        cli.main(["check"])
    with pytest.raises(SystemExit):
        cli.main(["check", "--policy-dir", str(tmp_path), "--server", "http://x"])
