"""Compiled matchers and the snapshot's policy selection."""

from __future__ import annotations

from typing import Any

import pytest

from authz.policy.compile import (
    CompileError,
    claim_path,
    compile_issuer,
    compile_policy,
    path_matcher,
)
from authz.policy.snapshot import Snapshot
from authz.policy.validate import validate_document
from tests.unit.policy.conftest import issuer_doc, policy_doc


@pytest.mark.parametrize(
    ("pattern", "matching", "not_matching"),
    [
        ("/healthz", ["/healthz"], ["/healthz/", "/healthzz", "/"]),
        ("/orders/**", ["/orders", "/orders/1", "/orders/1/items"], ["/ordersx", "/order"]),
        ("/orders/*", ["/orders/1", "/orders/"], ["/orders", "/orders/1/items"]),
        ("/orders/{id}", ["/orders/1"], ["/orders/", "/orders/1/items"]),
        ("/files/{rest=**}", ["/files/a/b/c", "/files/"], ["/file"]),
        ("/v*/users", ["/v1/users", "/v2/users"], ["/v1/x/users"]),
        ("/a.b", ["/a.b"], ["/axb"]),
    ],
)
def test_path_patterns(pattern: str, matching: list[str], not_matching: list[str]) -> None:
    matcher = path_matcher([pattern], [])
    assert matcher is not None
    for path in matching:
        assert matcher.matches(path), path
    for path in not_matching:
        assert not matcher.matches(path), path


def test_prefixes() -> None:
    matcher = path_matcher([], ["/api/"])
    assert matcher is not None and matcher.matches("/api/x") and not matcher.matches("/apix")


def test_claim_paths() -> None:
    assert claim_path("realm_access.roles") == ("realm_access", "roles")
    assert claim_path("cognito:groups") == ("cognito:groups",)
    assert claim_path("https://example\\.com/roles") == ("https://example.com/roles",)
    with pytest.raises(CompileError):
        claim_path("a..b")


def _policy(
    doc: dict[str, Any], issuers: dict[str, Any], labels: dict[str, str] | None = None
) -> Any:
    policy, problems = compile_policy(validate_document(doc, "p.yaml"), issuers, labels or {})
    return policy, problems


def _issuers(jwks: dict[str, Any]) -> dict[str, Any]:
    issuer = compile_issuer(validate_document(issuer_doc(jwks=jwks), "i.yaml"))
    return {issuer.id: issuer}


def test_selection_precedence(es256_jwks: dict[str, Any]) -> None:
    issuers = _issuers(es256_jwks)
    docs = {
        "any": policy_doc("any", targets={"hosts": ["*"]}),
        "wild": policy_doc("wild", targets={"hosts": ["*.example.com"]}),
        "deep": policy_doc("deep", targets={"hosts": ["*.api.example.com"]}),
        "exact": policy_doc("exact", targets={"hosts": ["shop.example.com"]}),
        "bound": policy_doc("bound", targets={"contextExtensions": {"policy": "orders"}}),
    }
    snapshot = Snapshot.build(1, [_policy(d, issuers)[0] for d in docs.values()])

    def chosen(host: str, context: dict[str, str] | None = None) -> str:
        policy = snapshot.select(host, context or {})
        assert policy is not None
        return policy.id.rsplit("/", 1)[1]

    assert chosen("shop.example.com", {"policy": "orders"}) == "bound"
    assert chosen("shop.example.com", {"policy": "other"}) == "exact"
    assert chosen("shop.example.com") == "exact"
    assert chosen("x.api.example.com") == "deep"
    assert chosen("x.example.com") == "wild"
    assert chosen("example.com") == "any"
    assert chosen("elsewhere.org") == "any"


def test_no_policy_for_unmatched_host(es256_jwks: dict[str, Any]) -> None:
    policy, _ = _policy(policy_doc(targets={"hosts": ["a.example"]}), _issuers(es256_jwks))
    assert Snapshot.build(1, [policy]).select("b.example", {}) is None


def test_workload_selector_is_decided_at_compile_time(es256_jwks: dict[str, Any]) -> None:
    doc = policy_doc(targets={"workloadSelector": {"matchLabels": {"app": "orders"}}})
    issuers = _issuers(es256_jwks)
    assert _policy(doc, issuers, {"app": "orders", "tier": "x"})[0] is not None
    assert _policy(doc, issuers, {"app": "billing"}) == (None, [])
    assert _policy(doc, issuers, {}) == (None, [])


def test_unresolved_issuer_is_dropped_and_reported(es256_jwks: dict[str, Any]) -> None:
    doc = policy_doc(issuers=[{"name": "idp"}, {"name": "gone"}])
    policy, problems = _policy(doc, _issuers(es256_jwks))
    assert list(policy.issuers_by_iss) == ["https://idp.example"]
    assert problems == ["spec.issuers[1]: JWTIssuer/default/gone not found or not ready"]


def test_token_rule_without_issuers_does_not_compile(es256_jwks: dict[str, Any]) -> None:
    doc = policy_doc()
    del doc["spec"]["issuers"]
    with pytest.raises(CompileError, match="trusts no issuer"):
        _policy(doc, _issuers(es256_jwks))


def test_bad_regex_is_a_compile_error(es256_jwks: dict[str, Any]) -> None:
    doc = policy_doc(rules=[{"claims": [{"path": "email", "regex": "(unclosed"}]}])
    with pytest.raises(CompileError, match=r"spec.rules\[0\].claims\[0\].regex"):
        _policy(doc, _issuers(es256_jwks))


def test_hmac_needs_explicit_algorithms() -> None:
    secret = {
        "keys": [{"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA", "kid": "h"}]
    }
    with pytest.raises(CompileError):
        compile_issuer(validate_document(issuer_doc(jwks=secret), "i.yaml"))
    issuer = compile_issuer(
        validate_document(issuer_doc(jwks=secret, algorithms=["HS256"]), "i.yaml")
    )
    assert issuer.keys.kids == ("h",)
