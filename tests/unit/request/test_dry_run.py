"""Dry-run policies: every decision is computed, logged and counted, and the request allowed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

from authz.request.decision import Reason
from tests.support.authz import CheckClient, check_request, check_server, header
from tests.support.tokens import AUDIENCE, ISSUER, NOW, claims, mint, signing_key

DOCS: list[dict[str, Any]] = [
    {
        "apiVersion": "authz.io/v1alpha1",
        "kind": "JWTIssuer",
        "metadata": {"name": "idp", "namespace": "dry"},
        "spec": {"issuer": ISSUER, "jwks": {"keys": [signing_key("ES256")[1]]}},
    },
    {
        "apiVersion": "authz.io/v1alpha1",
        "kind": "AuthzPolicy",
        "metadata": {"name": "shadow", "namespace": "dry"},
        "spec": {
            "targets": {"hosts": ["dry.test"]},
            "issuers": [{"name": "idp"}],
            "audiences": [AUDIENCE],
            "dryRun": True,
            "rules": [
                {"name": "off", "match": {"paths": ["/off"]}, "action": "deny"},
                {
                    "name": "read",
                    "match": {"paths": ["/read"]},
                    "requireScopes": {"allOf": ["read"]},
                },
            ],
            "response": {"headers": [{"name": "x-auth-subject", "claim": "sub"}]},
        },
    },
]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CheckClient]:
    directory = tmp_path_factory.mktemp("dry")
    (directory / "policies.yaml").write_text(yaml.safe_dump_all(DOCS))
    with check_server(directory, clock=lambda: NOW) as c:
        assert all(s.accepted for s in c.store.statuses.values())
        yield c


def request(path: str, headers: dict[str, str]) -> CheckRequest:
    return check_request(method="GET", host="dry.test", path=path, headers=headers)


def bearer(**overrides: Any) -> dict[str, str]:
    return {"authorization": f"Bearer {mint(signing_key('ES256')[0], claims(**overrides))}"}


@pytest.mark.parametrize(
    ("path", "headers", "would_deny", "subject"),
    [
        ("/read", bearer(scope="other"), Reason.INSUFFICIENT_SCOPE, "alice"),
        ("/off", bearer(), Reason.RULE_DENIED, "alice"),  # read after the rule denied
        ("/unlisted", bearer(sub="bob"), Reason.NO_RULE, "bob"),
        ("/read", {}, Reason.TOKEN_MISSING, None),
        ("/read", {"authorization": "Bearer x.y.z"}, Reason.TOKEN_MALFORMED, None),
        ("/read", bearer(aud="elsewhere"), Reason.AUDIENCE_MISMATCH, None),
        ("/read", bearer(exp=NOW - 3600), Reason.TOKEN_EXPIRED, None),
        ("/off", {"authorization": "Bearer x.y.z"}, Reason.RULE_DENIED, None),
    ],
)
def test_would_deny_is_allowed_with_identity_only_from_a_valid_token(
    client: CheckClient, path: str, headers: dict[str, str], would_deny: Reason, subject: str | None
) -> None:
    response = client.check(
        headers={**headers, "x-auth-subject": "spoofed"}, host="dry.test", path=path
    )
    assert response.status.code == 0
    assert header(response, "x-auth-subject") == subject
    if subject is None:
        assert "x-auth-subject" in response.ok_response.headers_to_remove
    _, outcome = client.checker.check(request(path, headers))  # the same, seen from inside
    assert outcome.decision.allowed and outcome.decision.reason == Reason.ALLOWED_DRY_RUN
    assert outcome.would_deny is not None and outcome.would_deny.reason == would_deny
    assert outcome.decision.policy == "AuthzPolicy/dry/shadow"


def test_an_allowed_request_is_not_a_dry_run(client: CheckClient) -> None:
    response = client.check(headers=bearer(scope="read"), host="dry.test", path="/read")
    assert response.status.code == 0 and header(response, "x-auth-subject") == "alice"


def test_would_deny_is_counted(client: CheckClient) -> None:
    labels = {"policy": "AuthzPolicy/dry/shadow", "reason": "insufficient_scope"}
    registry = client.metrics.registry
    before = registry.get_sample_value("authz_dry_run_would_deny_total", labels) or 0
    client.check(headers=bearer(scope="nope"), host="dry.test", path="/read")
    assert registry.get_sample_value("authz_dry_run_would_deny_total", labels) == before + 1
    decisions = {
        "decision": "allow",
        "reason": "allowed_dry_run",
        "policy": "AuthzPolicy/dry/shadow",
    }
    assert (registry.get_sample_value("authz_decisions_total", decisions) or 0) >= 1
