"""Validation errors name the file, the object and the field path."""

from __future__ import annotations

from typing import Any

import pytest

from authz.policy.validate import PolicyError, validate_document
from tests.unit.policy.conftest import issuer_doc, policy_doc


def problems(doc: Any) -> list[str]:
    with pytest.raises(PolicyError) as info:
        validate_document(doc, "policies/x.yaml")
    assert str(info.value).startswith("policies/x.yaml: ")
    return info.value.problems


def test_valid_documents_become_objects(es256_jwks: dict[str, Any]) -> None:
    obj = validate_document(issuer_doc(jwks=es256_jwks), "f.yaml")
    assert obj.key == "JWTIssuer/default/idp"
    cluster = issuer_doc(jwks=es256_jwks)
    cluster["kind"] = "ClusterJWTIssuer"
    assert validate_document(cluster, "f.yaml").key == "ClusterJWTIssuer/idp"
    assert validate_document(policy_doc(), "f.yaml").key == "AuthzPolicy/default/api"


def test_field_paths_in_errors() -> None:
    doc = policy_doc(rules=[{"match": {"methods": ["GET", "FETCH"]}}])
    assert problems(doc) == [
        "spec.rules[0].match.methods[1]: 'FETCH' is not one of GET, HEAD, "
        "POST, PUT, PATCH, DELETE, OPTIONS, TRACE, CONNECT"
    ]


def test_unknown_fields_are_rejected_like_kubectl_strict() -> None:
    doc = policy_doc(rules=[{"match": {"path": ["/a"]}}])
    [message] = problems(doc)
    assert message.startswith("spec.rules[0].match: unknown field(s) path; allowed: hosts,")


def test_exactly_one_key_source(es256_jwks: dict[str, Any]) -> None:
    one = (
        "spec: exactly one key source must be set: jwks, jwksFile, jwksUri, discovery, "
        "publicKeys, x509CertificatesUri, hmacSecretFile or hmacSecretRef "
        "(none: introspection only)"
    )
    assert problems(issuer_doc()) == [one]
    assert problems(issuer_doc(jwks=es256_jwks, jwksFile="k.json")) == [one]
    assert problems(issuer_doc(discovery=False)) == [one]
    assert problems(issuer_doc(discovery=True, jwksUri="https://idp.example/jwks")) == [one]


def test_algorithm_none_is_not_a_choice(es256_jwks: dict[str, Any]) -> None:
    [message] = problems(issuer_doc(jwks=es256_jwks, algorithms=["none"]))
    assert message.startswith("spec.algorithms[0]: 'none' is not one of RS256")


def test_token_source_needs_exactly_one_place(es256_jwks: dict[str, Any]) -> None:
    doc = issuer_doc(
        jwks=es256_jwks, tokenSources=[{"cookie": {"name": "a"}, "query": {"name": "b"}}]
    )
    assert problems(doc) == [
        "spec.tokenSources[0]: exactly one of header, cookie, query must be set"
    ]


def test_policy_needs_targets_and_rules() -> None:
    assert problems(policy_doc(targets={})) == [
        "spec.targets: at least one target must be set: hosts, contextExtensions or workloadSelector"
    ]
    assert problems(policy_doc(rules=[])) == ["spec.rules: [] should be non-empty"]


def test_requirements_need_require_token() -> None:
    doc = policy_doc(rules=[{"action": "allowAnonymous", "requireScopes": {"allOf": ["a"]}}])
    assert problems(doc) == [
        "spec.rules[0]: requireScopes, requireRoles and claims need action requireToken"
    ]


def test_claim_condition_needs_one_operator() -> None:
    doc = policy_doc(rules=[{"claims": [{"path": "tenant", "equals": "a", "regex": "a.*"}]}])
    assert problems(doc) == [
        "spec.rules[0].claims[0]: exactly one of equals, in, present, regex must be set"
    ]


def test_envelope_errors() -> None:
    assert problems("just a string") == ["a policy document must be a mapping"]
    doc = policy_doc()
    doc["apiVersion"] = "authz.io/v1"
    doc["metadata"]["name"] = "Not_A_Name"
    assert problems(doc) == [
        "apiVersion: must be authz.io/v1alpha1, got 'authz.io/v1'",
        "metadata.name: must be a DNS subdomain name (lower case, digits, '-', '.')",
    ]


def test_wrong_types_are_named() -> None:
    doc = issuer_doc(jwks={"keys": []}, clockSkewSeconds="60")
    assert problems(doc) == [
        "spec.clockSkewSeconds: must be of type integer, got str",
        "spec.jwks.keys: [] should be non-empty",
    ]


HTTPS_JWKS = "https://idp.example/jwks"


@pytest.mark.parametrize(
    "spec",
    [
        {"jwksUri": HTTPS_JWKS},
        {"discovery": True},
        {"x509CertificatesUri": "https://www.googleapis.com/robot/v1/metadata/x509/x"},
        {"publicKeys": [{"kid": "a", "pem": "PEM"}, {"file": "b.pem"}]},
        {"hmacSecretFile": "secret", "algorithms": ["HS256", "HS512"]},
        {"jwksUri": HTTPS_JWKS, "fetch": {"refreshSeconds": 60, "caFile": "ca.pem"}},
        {"jwksUri": "http://127.0.0.1:8080/jwks", "fetch": {"allowInsecureHttp": True}},
        {
            "issuer": "https://login.microsoftonline.com/{tenant}/v2.0",
            "tenants": ["contoso.onmicrosoft.com", "9188040d-6c67-4c5b-b112-36a304b66dad"],
            "jwksUri": "https://login.microsoftonline.com/common/discovery/v2.0/keys",
        },
    ],
)
def test_key_sources_that_validate(spec: dict[str, Any]) -> None:
    iss = spec.pop("issuer", "https://idp.example")
    assert validate_document(issuer_doc(iss=iss, **spec), "f.yaml").spec["issuer"] == iss


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        (
            {"hmacSecretFile": "s"},
            "spec: hmacSecretFile and hmacSecretRef need algorithms listing only HS256, HS384 or HS512",
        ),
        (
            {"hmacSecretFile": "s", "algorithms": ["HS256", "RS256"]},
            "spec: hmacSecretFile and hmacSecretRef need algorithms listing only HS256, HS384 or HS512",
        ),
        (
            {"jwksUri": HTTPS_JWKS, "tenants": ["a"]},
            "spec: tenants and a {tenant} placeholder in issuer go together",
        ),
        (
            {"issuer": "https://idp/{tenant}", "jwksUri": HTTPS_JWKS},
            "spec: tenants and a {tenant} placeholder in issuer go together",
        ),
        (
            {"issuer": "https://idp/{tenant}", "tenants": ["a"], "discovery": True},
            "spec: discovery needs a fixed issuer; for an issuer template set jwksUri",
        ),
        (
            {"jwksUri": "http://idp.example/jwks"},
            "spec: key URLs (jwksUri, x509CertificatesUri, the discovery issuer) must use "
            "https unless fetch.allowInsecureHttp is true",
        ),
        (
            {"issuer": "http://idp.example", "discovery": True},
            "spec: key URLs (jwksUri, x509CertificatesUri, the discovery issuer) must use "
            "https unless fetch.allowInsecureHttp is true",
        ),
        (
            {"jwks": {"keys": [{}]}, "fetch": {"refreshSeconds": 60}},
            "spec: fetch applies only to remote key sources: jwksUri, discovery or "
            "x509CertificatesUri",
        ),
        (
            {"jwksUri": HTTPS_JWKS, "fetch": {"minRefreshSeconds": 7200}},
            "spec.fetch: minRefreshSeconds must not exceed maxRefreshSeconds",
        ),
        (
            {"publicKeys": [{"pem": "P"}, {"kid": "b"}]},
            "spec.publicKeys[1]: exactly one of pem, file must be set",
        ),
    ],
)
def test_key_source_rules(spec: dict[str, Any], problem: str) -> None:
    iss = spec.pop("issuer", "https://idp.example")
    assert problems(issuer_doc(iss=iss, **spec)) == [problem]


def test_fetch_bounds_are_typed() -> None:
    doc = issuer_doc(jwksUri=HTTPS_JWKS, fetch={"timeoutSeconds": 0, "unknownKidWaitMillis": 9000})
    assert problems(doc) == [
        "spec.fetch.timeoutSeconds: 0 is less than the minimum of 1",
        "spec.fetch.unknownKidWaitMillis: 9000 is greater than the maximum of 5000",
    ]
