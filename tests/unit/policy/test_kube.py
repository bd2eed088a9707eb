"""Cluster objects through the same validation as files plus the cluster-only rules,
table-tested with an in-memory Secret reader (the real API server tests are in e2e)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from authz.policy import kube
from authz.policy.compile import CA_BUNDLE_REF
from authz.policy.kube import ClusterValidator, _fingerprint, validate_objects
from authz.policy.validate import validate_document
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


# -- namespaced issuers (issue 11, item 3) ----------------------------------------------------

JWKS_URI = "https://idp.example/jwks"
CONFIGMAPS = {("shop", "idp-ca", "ca.pem"): "-----BEGIN CERTIFICATE-----\n..."}


def read_configmap(namespace: str, name: str, key: str) -> str:
    try:
        return CONFIGMAPS[(namespace, name, key)]
    except KeyError:
        raise ValueError(f"cannot read ConfigMap {namespace}/{name}: 404 Not Found") from None


def remote(**fetch: Any) -> dict[str, Any]:
    return {"jwksUri": JWKS_URI, "fetch": fetch}


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        (
            {"jwksUri": "http://idp.example/jwks", "fetch": {"allowInsecureHttp": True}},
            "fetches keys over https only",
        ),
        (remote(caFile="/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"), "fetch.caFile"),
        (
            remote(caBundleRef={"name": "idp-ca", "key": "ca.pem", "namespace": "kube-system"}),
            "caBundleRef.namespace is for ClusterJWTIssuers",
        ),
    ],
)
def test_a_namespaced_issuer_keeps_to_its_namespace(spec: dict[str, Any], problem: str) -> None:
    """Refused on a cluster JWTIssuer (as the CRD's CEL rules refuse them), allowed in policy
    files and on ClusterJWTIssuers, which admins write."""
    _objects, failures = validate_objects([issuer(namespace="shop", **spec)], None, read_configmap)
    [(_origin, problems)] = failures.values()
    assert any(problem in p for p in problems), problems
    validate_document(issuer(namespace="shop", **spec), "policies/idp.yaml")  # files: fine
    if "caBundleRef" not in spec["fetch"]:
        objects, failures = validate_objects([cluster_issuer("c", **spec)])
        assert failures == {} and len(objects) == 1


def test_a_ca_bundle_ref_is_read_from_the_issuer_namespace() -> None:
    ref = {"name": "idp-ca", "key": "ca.pem"}
    objects, failures = validate_objects(
        [issuer(namespace="shop", **remote(caBundleRef=ref))], None, read_configmap
    )
    assert failures == {}
    assert objects[0].refs == {CA_BUNDLE_REF: CONFIGMAPS[("shop", "idp-ca", "ca.pem")]}
    _objects, failures = validate_objects(
        [issuer(namespace="other", **remote(caBundleRef=ref))], None, read_configmap
    )
    [(_origin, [problem])] = failures.values()
    assert problem == "spec.fetch.caBundleRef: cannot read ConfigMap other/idp-ca: 404 Not Found"
    _objects, failures = validate_objects([cluster_issuer("c", **remote(caBundleRef=ref))])
    [(_origin, [problem])] = failures.values()
    assert "a ClusterJWTIssuer must name the ConfigMap's namespace" in problem


def test_validation_is_cached_by_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rebuild after one edit validates one object; references are read every time."""
    validated: list[str] = []
    real = kube.validate_document

    def counting(doc: Any, origin: str, source: Any = "files") -> Any:
        validated.append(origin)
        return real(doc, origin, source)

    monkeypatch.setattr(kube, "validate_document", counting)
    reads: list[str] = []

    def reading(namespace: str, name: str, key: str) -> bytes:
        reads.append(name)
        return read_secret(namespace, name, key)

    validator = ClusterValidator(reading)
    docs = [issuer(namespace="shop", **hmac_ref()), policy(namespace="shop")]
    validator.validate(docs)
    assert len(validated) == 2 and reads == ["hmac"]
    edited = policy(namespace="shop", defaultAction="allowAnonymous")
    edited["metadata"]["generation"] = 2
    objects, failures = validator.validate([docs[0], edited])
    assert validated[2:] == ["kubernetes AuthzPolicy/shop/api"] and reads == ["hmac", "hmac"]
    assert failures == {} and objects[1].spec["defaultAction"] == "allowAnonymous"
