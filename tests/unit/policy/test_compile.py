"""Compiled matchers and the snapshot's policy selection."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import get_default_algorithms

from authz.devtools import mint_token
from authz.keys.remote import KeyManager, RemoteKeys
from authz.keys.sources import RemoteSource
from authz.policy import schema
from authz.policy.compile import (
    CA_BUNDLE_REF,
    CompileError,
    claim_path,
    compile_issuer,
    compile_policy,
    host_problems,
    path_matcher,
)
from authz.policy.snapshot import Snapshot
from authz.policy.validate import validate_document
from authz.request.verify import verify
from tests.support.keyserver import make_ca
from tests.support.tokens import NOW, b64url, claims, signing_key
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
    result = compile_policy(validate_document(doc, "p.yaml"), issuers, labels or {})
    return result.policy, list(result.problems)


def _result(doc: dict[str, Any], issuers: dict[str, Any]) -> Any:
    return compile_policy(validate_document(doc, "p.yaml"), issuers, {})


def _issuers(jwks: dict[str, Any]) -> dict[str, Any]:
    issuer = compile_issuer(validate_document(issuer_doc(jwks=jwks), "i.yaml"), KeyManager())
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
    assert _result(doc, _issuers(es256_jwks)).unresolved == tuple(problems)


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
        compile_issuer(validate_document(issuer_doc(jwks=secret), "i.yaml"), KeyManager())
    issuer = compile_issuer(
        validate_document(issuer_doc(jwks=secret, algorithms=["HS256"]), "i.yaml"), KeyManager()
    )
    assert issuer.keys.current().kids == ("h",)


def _issuer(tmp_path: Path, manager: KeyManager | None = None, **spec: Any) -> Any:
    doc = validate_document(issuer_doc(**spec), str(tmp_path / "issuer.yaml"))
    return compile_issuer(doc, manager or KeyManager(start=False))


def _pem(alg: str, kid: str) -> str:
    jwk = signing_key(alg, kid)[1]
    key = get_default_algorithms()[alg].from_jwk(jwk)
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def test_public_keys_inline_and_from_files(tmp_path: Path) -> None:
    (tmp_path / "b.pem").write_text(_pem("ES256", "b"))
    issuer = _issuer(
        tmp_path,
        publicKeys=[{"kid": "a", "pem": _pem("ES256", "a")}, {"kid": "b", "file": "b.pem"}],
        algorithms=["ES256"],
    )
    assert issuer.keys.current().kids == ("a", "b")
    assert issuer.keys.state().source == "publicKeys"
    # A deleted key file removes that key (issue 11, item 14): with none left, no key.
    revoked = _issuer(tmp_path, publicKeys=[{"file": "missing.pem"}])
    assert revoked.keys.current().keys == ()
    assert "missing.pem does not exist" in revoked.keys.state().warnings[0]
    with pytest.raises(CompileError, match=r"spec.publicKeys: \[0\]: not a PEM public key"):
        _issuer(tmp_path, publicKeys=[{"pem": "-----BEGIN nonsense"}])


def test_hmac_secret_file(tmp_path: Path) -> None:
    secret = b"0123456789abcdef0123456789abcdef"
    (tmp_path / "secret").write_bytes(secret + b"\n")
    issuer = _issuer(tmp_path, hmacSecretFile="secret", algorithms=["HS256"])
    [key] = issuer.keys.current().keys
    assert key.key == secret and key.algorithms == {"HS256"}
    token = mint_token(
        {"kty": "oct", "k": b64url(secret), "alg": "HS256"}, claims(iss="https://idp.example")
    )
    assert verify(token, {issuer.issuer: issuer}, NOW).claims["sub"] == "alice"
    (tmp_path / "short").write_bytes(b"too short\n")
    with pytest.raises(CompileError, match=r"spec\.hmacSecretFile: oct key is 9 bytes"):
        _issuer(tmp_path, hmacSecretFile="short", algorithms=["HS256"])


def test_tenant_templates_expand_to_concrete_issuers(tmp_path: Path) -> None:
    template = "https://login.example/{tenant}/v2.0"
    issuer = _issuer(
        tmp_path, iss=template, tenants=["t1", "t2"], jwksUri="https://login.example/keys"
    )
    assert issuer.issuer == template
    assert issuer.accepted_iss == ("https://login.example/t1/v2.0", "https://login.example/t2/v2.0")
    result = compile_policy(validate_document(policy_doc(), "p.yaml"), {issuer.id: issuer}, {})
    policy = result.policy
    assert policy is not None and result.problems == ()
    assert list(policy.issuers_by_iss) == list(issuer.accepted_iss)
    assert all(i is issuer for i in policy.issuers_by_iss.values())


def test_remote_sources_and_their_settings(tmp_path: Path) -> None:
    manager = KeyManager(start=False)
    issuer = _issuer(
        tmp_path,
        manager,
        discovery=True,
        fetch={"refreshSeconds": 120, "unknownKidWaitMillis": 100, "timeoutSeconds": 2},
    )
    assert isinstance(issuer.keys, RemoteKeys)
    assert issuer.keys.source == RemoteSource(
        "discovery",
        "https://idp.example/.well-known/openid-configuration",
        "https://idp.example",
        frozenset(schema.ASYMMETRIC_ALGORITHMS),
    )
    settings = issuer.keys.settings
    assert (settings.refresh, settings.wait, settings.timeout, settings.cooldown) == (
        120,
        0.1,
        2,
        30,
    )
    assert not issuer.keys.state().ready
    again = _issuer(tmp_path, manager, discovery=True)
    assert again.keys is issuer.keys and again.keys.settings.refresh == 600


def test_remote_source_problems(tmp_path: Path) -> None:
    with pytest.raises(CompileError, match=r"spec\.jwksUri: 'https://' is not an absolute"):
        _issuer(tmp_path, jwksUri="https://")
    with pytest.raises(CompileError, match=r"spec.fetch.caFile: cannot read .*ca.pem"):
        _issuer(tmp_path, jwksUri="https://idp.example/k", fetch={"caFile": "ca.pem"})
    (tmp_path / "ca.pem").write_text("not a certificate")
    with pytest.raises(CompileError, match=r"spec\.fetch\.caFile: not a PEM CA bundle"):
        _issuer(tmp_path, jwksUri="https://idp.example/k", fetch={"caFile": "ca.pem"})


def test_hosts_the_shipped_proxies_never_route_are_flagged() -> None:
    """Issue 11, item 4: a policy host with a port never matched and lint said ok."""
    problems = host_problems(
        ["admin.example.com:443", "a.example.com.", "[::1]:8080", "[::1]", "ok.example"], "h"
    )
    assert [p.split(":")[0] for p in problems] == ["h[0]", "h[1]", "h[2]"]
    assert "has a port" in problems[0] and "ends with a dot" in problems[1]


def test_lint_warns_about_strings_that_look_typed_and_unreachable_rules() -> None:
    from tests.support.docs import issuer, policy, rule
    from tests.support.snapshots import serve

    served = serve(
        issuer(),
        policy(
            rules=[
                rule(
                    "verified", paths=["/a"], claims=[{"path": "email_verified", "equals": "true"}]
                ),
                rule("level", paths=["/b"], claims=[{"path": "acr", "in": ["2", 3]}]),
                rule("all"),
                rule("late", paths=["/c"]),
            ]
        ),
    )
    status = served.statuses["AuthzPolicy/default/api"]
    assert status.accepted  # warnings: the policy still serves
    assert status.problems == (
        "spec.rules[3]: never reached: rules[2] before it matches every request (the first "
        "matching rule decides)",
        "spec.rules[0].claims[0]: 'true' is a string and matches only the string \"true\"; "
        "claims compare with their JSON type: write true without quotes for a boolean or "
        "number claim",
        "spec.rules[1].claims[0]: '2' is a string and matches only the string \"2\"; claims "
        "compare with their JSON type: write 2 without quotes for a boolean or number claim",
    )


def test_namespaced_cluster_issuers_fetch_from_public_addresses_only(tmp_path: Path) -> None:
    """Their writers must not probe the authorizer's host or the metadata service; policy
    files and ClusterJWTIssuers keep reaching in-cluster IdPs on any address."""
    ca_pem = make_ca(tmp_path).ca_file.read_text()
    ref = {"name": "idp-ca", "key": "ca.pem"}
    spec = {"jwksUri": "https://idp.example/k", "fetch": {"caBundleRef": ref}}
    tenant = validate_document(issuer_doc(**spec), "kubernetes JWTIssuer/default/idp", "kubernetes")
    tenant = dataclasses.replace(tenant, refs={CA_BUNDLE_REF: ca_pem})
    compiled = compile_issuer(tenant, KeyManager(start=False))
    assert isinstance(compiled.keys, RemoteKeys)
    assert compiled.keys.settings.public_only and compiled.keys.settings.ca_pem == ca_pem
    admin = _issuer(tmp_path, jwksUri="https://idp.example/k")
    assert isinstance(admin.keys, RemoteKeys) and not admin.keys.settings.public_only
    with pytest.raises(CompileError, match=r"caBundleRef: ConfigMaps are read in cluster mode"):
        _issuer(tmp_path, **spec)
    broken = dataclasses.replace(tenant, refs={CA_BUNDLE_REF: "not a certificate"})
    with pytest.raises(CompileError, match=r"caBundleRef: not a PEM CA bundle"):
        compile_issuer(broken, KeyManager(start=False))
