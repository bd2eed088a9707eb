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
    assert problems(issuer_doc()) == ["spec: exactly one key source must be set: jwks or jwksFile"]
    both = issuer_doc(jwks=es256_jwks, jwksFile="k.json")
    assert problems(both) == ["spec: exactly one key source must be set: jwks or jwksFile"]


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
