"""Cluster objects through the same validation as files plus the cluster-only rules,
table-tested with an in-memory Secret reader (the real API server tests are in e2e)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from authz.policy.kube import _fingerprint, validate_objects
from tests.support.docs import cluster_issuer, issuer, policy

SECRETS = {("shop", "hmac", "key"): b"s3cret\n"}


def read_secret(namespace: str, name: str, key: str) -> bytes:
    try:
        return SECRETS[(namespace, name, key)]
    except KeyError:
        raise ValueError(f"cannot read Secret {namespace}/{name}: 404 Not Found") from None


def hmac_ref(**ref: Any) -> dict[str, Any]:
    return {"hmacSecretRef": {"name": "hmac", "key": "key", **ref}, "algorithms": ["HS256"]}


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        (
            issuer(namespace="shop", jwksFile="keys.json"),
            "spec.jwksFile: reads the authorizer's filesystem",
        ),
        (
            issuer(namespace="shop", hmacSecretFile="s", algorithms=["HS256"]),
            "spec.hmacSecretFile: reads the authorizer's filesystem",
        ),
        (
            issuer(namespace="shop", publicKeys=[{"file": "k.pem"}]),
            "spec.publicKeys[0].file: reads the authorizer's filesystem",
        ),
        (
            issuer(namespace="shop", **hmac_ref(namespace="other")),
            "namespace is for ClusterJWTIssuer only",
        ),
        (cluster_issuer("c", **hmac_ref()), "a ClusterJWTIssuer must name the Secret's namespace"),
        (issuer(namespace="shop", **hmac_ref(name="gone")), "cannot read Secret shop/gone: 404"),
        (policy(namespace="shop", rules=[{"action": "bogus"}]), "action"),
    ],
)
def test_refused(doc: dict[str, Any], problem: str) -> None:
    objects, failures = validate_objects([doc], read_secret)
    assert objects == []
    [(origin, problems)] = failures.values()
    assert origin.startswith("kubernetes ") and any(problem in p for p in problems), problems


def test_secret_refs_become_inline_keys() -> None:
    objects, failures = validate_objects([issuer(namespace="shop", **hmac_ref())], read_secret)
    assert failures == {}
    [obj] = objects
    assert "hmacSecretRef" not in obj.spec
    secret = base64.urlsafe_b64encode(b"s3cret").rstrip(b"=").decode()  # one newline dropped
    assert obj.spec["jwks"] == {"keys": [{"kty": "oct", "k": secret}]}


def test_status_and_server_fields_are_not_part_of_the_spec() -> None:
    doc = issuer(namespace="shop")
    served = {
        **doc,
        "metadata": {**doc["metadata"], "resourceVersion": "9", "uid": "u"},
        "status": {"x": 1},
    }
    objects, failures = validate_objects([served], read_secret)
    assert failures == {} and objects[0].key == "JWTIssuer/shop/idp"
    assert _fingerprint(served) == _fingerprint({**served, "status": {"x": 2}})
    assert _fingerprint(served) != _fingerprint(
        {**served, "spec": {**served["spec"], "issuer": "y"}}
    )
