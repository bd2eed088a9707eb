"""A dry-run policy behind a real Envoy: the upstream gets every request, the log and the
metrics say what would have been denied."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml

from authz.devtools import generate_key, mint_token
from tests.e2e.conftest import EnvoyStackFactory

ISS = "https://idp.dry.test"


def test_dry_run_allows_logs_and_counts(tmp_path: Path, envoy_stack: EnvoyStackFactory) -> None:
    private, public = generate_key("ES256", "dry-1")
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "authz.io/v1alpha1",
            "kind": "JWTIssuer",
            "metadata": {"name": "idp", "namespace": "default"},
            "spec": {"issuer": ISS, "jwks": {"keys": [public]}},
        },
        {
            "apiVersion": "authz.io/v1alpha1",
            "kind": "AuthzPolicy",
            "metadata": {"name": "shadow", "namespace": "default"},
            "spec": {
                "targets": {"hosts": ["*"]},
                "issuers": [{"name": "idp"}],
                "dryRun": True,
                "rules": [{"name": "read", "requireScopes": {"allOf": ["orders.read"]}}],
            },
        },
    ]
    (tmp_path / "policies.yaml").write_text(yaml.safe_dump_all(docs))
    stack = envoy_stack(tmp_path)
    now = int(time.time())
    value = mint_token(private, {"iss": ISS, "sub": "alice", "iat": now, "exp": now + 300})

    with_token = stack.get("/orders/1", token=value, x_auth_subject="spoofed")
    assert with_token.status == 200
    assert with_token.upstream_headers["x-auth-subject"] == "alice"  # valid token: identity
    without = stack.get("/orders/2", x_auth_subject="spoofed")
    assert without.status == 200 and "x-auth-subject" not in without.upstream_headers

    time.sleep(0.3)
    log = stack.authz.process.output()
    assert value not in log
    lines = [json.loads(x) for x in log.splitlines() if '"decision"' in x and "/orders/" in x]
    assert [
        (x["path"], x["decision"], x["status"], x["dry_run"], x["would_deny"]) for x in lines
    ] == [
        ("/orders/1", "allow", 200, True, "insufficient_scope"),
        ("/orders/2", "allow", 200, True, "token_missing"),
    ]
    assert [x["would_status"] for x in lines] == [403, 401]
    metrics = stack.authz.metrics()
    for reason in ("insufficient_scope", "token_missing"):
        assert (
            f'authz_dry_run_would_deny_total{{policy="AuthzPolicy/default/shadow",reason="{reason}"}} 1.0'
            in metrics
        )
