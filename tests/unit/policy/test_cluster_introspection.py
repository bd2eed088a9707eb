"""Cluster mode for introspecting issuers and TokenRevocations: Secrets named by reference,
no files from the authorizer's disk, and the status a revocation list reports
(the real API server runs the same in tests/e2e/test_revocation_cluster.py)."""

from __future__ import annotations

from typing import Any

import pytest

from authz.policy.cluster import entries_status
from authz.policy.compile import CLIENT_SECRET_REF
from authz.policy.kube import validate_objects
from authz.policy.store import PolicyStore
from tests.support.docs import cluster_issuer, document, issuer

SECRETS = {("shop", "introspection", "secret"): b"s3cret\n", ("idp", "rs", "pem"): b"PEM"}


def read_secret(namespace: str, name: str, key: str) -> bytes:
    try:
        return SECRETS[(namespace, name, key)]
    except KeyError:
        raise ValueError(f"cannot read Secret {namespace}/{name}: 404 Not Found") from None


def introspection(**client_auth: Any) -> dict[str, Any]:
    return {
        "introspection": {
            "endpoint": "https://idp.test/introspect",
            "clientAuth": {"method": "client_secret_basic", "clientId": "rs", **client_auth},
        }
    }


def test_a_secret_ref_is_read_into_the_spec_the_compiler_reads() -> None:
    doc = issuer(namespace="shop", **introspection(clientSecretRef={"name": "introspection", "key": "secret"}))  # fmt: skip
    [obj], failures = validate_objects([doc], read_secret)
    assert failures == {}
    assert obj.refs[CLIENT_SECRET_REF] == "s3cret"  # one trailing newline dropped
    assert "s3cret" not in repr(obj.spec)


def test_a_cluster_issuer_names_the_secrets_namespace() -> None:
    ref = {"name": "rs", "key": "pem", "namespace": "idp"}
    doc = cluster_issuer(
        "c",
        **introspection(method="private_key_jwt", privateKeyRef=ref),
    )
    [obj], _ = validate_objects([doc], read_secret)
    assert obj.refs[CLIENT_SECRET_REF] == "PEM"


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        (
            issuer(namespace="shop", **introspection(clientSecretFile="/etc/passwd")),
            "spec.introspection.clientAuth.clientSecretFile: reads the authorizer's filesystem",
        ),
        (
            issuer(namespace="shop", **introspection(method="private_key_jwt", privateKeyFile="k")),
            "spec.introspection.clientAuth.privateKeyFile: reads the authorizer's filesystem",
        ),
        (
            issuer(
                namespace="shop",
                **introspection(clientSecretRef={"name": "x", "key": "k", "namespace": "idp"}),
            ),
            "namespace is for ClusterJWTIssuer only",
        ),
        (
            issuer(namespace="shop", **introspection(clientSecretRef={"name": "gone", "key": "k"})),
            "spec.introspection.clientAuth.clientSecretRef: cannot read Secret shop/gone",
        ),
    ],
)
def test_refused(doc: dict[str, Any], problem: str) -> None:
    objects, failures = validate_objects([doc], read_secret)
    assert objects == []
    [(_, problems)] = failures.values()
    assert any(problem in p for p in problems), problems


def test_a_revocation_list_reports_its_active_entries() -> None:
    store = PolicyStore()
    doc = document(
        "TokenRevocation",
        "incident",
        {
            "maxTokenLifetimeSeconds": 60,
            "entries": [
                {"jti": "a", "expiresAt": "2999-01-01T00:00:00Z"},
                {"subject": "b", "issuedBefore": "2000-01-01T00:00:00Z"},
            ],
        },
        namespace=None,
    )
    objects, failures = validate_objects([doc], read_secret)
    store.update(objects, failures, source="kubernetes")
    assert entries_status(store, "TokenRevocation/incident") == {"active": 1, "lapsed": 1}
    assert entries_status(store, "TokenRevocation/other") is None
    store.close()


def test_a_namespaced_issuers_endpoint_is_called_public_only() -> None:
    from authz.introspection.manager import IntrospectionManager
    from tests.support.snapshots import serve_sources

    ref = {"clientSecretRef": {"name": "introspection", "key": "secret"}}
    tenant = issuer(namespace="shop", **introspection(**ref))
    admin = cluster_issuer("c", **introspection(clientSecretRef={**ref["clientSecretRef"], "namespace": "shop"}))  # fmt: skip
    manager = IntrospectionManager()
    endpoint = {"endpoint": "https://idp.test/introspect", "clientAuth": {"method": "none"}}
    files = [issuer(name="f", introspection=endpoint)]
    served = serve_sources(files, [tenant, admin], read_secret=read_secret, introspection=manager)
    settings = {
        key: issuer.introspection.settings.public_only
        for key, issuer in served.last_good.issuers.items()
        if issuer.introspection is not None
    }
    assert settings == {
        "JWTIssuer/shop/idp": True,
        "ClusterJWTIssuer/c": False,
        "JWTIssuer/default/f": False,
    }
    manager.close()
