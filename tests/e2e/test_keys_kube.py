"""The key-source schema and the kube-apiserver as an OIDC issuer, on a real API server.

- The issuer CRD's CEL rules for key sources give the same verdicts, with the same
  messages, as `authz lint` (validate.py) on files.
- Service-account tokens from TokenRequest: the authorizer discovers the API server's
  keys over HTTPS, verified with the cluster CA given as `fetch.caFile` (the API server
  serves its JWKS only as application/jwk-set+json), and accepts a workload's token for
  the right audience and namespace only.

Runs against the session's real etcd + kube-apiserver.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from authz.policy import crd
from authz.policy.validate import PolicyError, validate_document
from tests.support import kube_fixtures
from tests.support.authz import check_server, header
from tests.support.kube import ControlPlane, KubeError

control_plane = kube_fixtures.control_plane
control_plane_users = kube_fixtures.control_plane_users

AUDIENCE = "orders-api"


CA_REF = {"name": "idp-ca", "key": "ca.pem"}
SPECS: list[dict[str, Any]] = [
    {"issuer": "https://i", "discovery": True},
    {"issuer": "https://i", "discovery": False},
    {"issuer": "https://i", "discovery": True, "jwksUri": "https://i/k"},
    {"issuer": "https://i", "jwksUri": "https://i/k", "fetch": {}},
    {"issuer": "https://i", "jwksUri": "http://i/k"},
    {"issuer": "http://i", "discovery": True},
    {"issuer": "https://i", "x509CertificatesUri": "http://i/c"},
    {"issuer": "https://i", "jwksUri": "http://i/k", "fetch": {"allowInsecureHttp": True}},
    {"issuer": "https://i/{tenant}", "jwksUri": "https://i/k", "tenants": ["a", "b"]},
    {"issuer": "https://i/{tenant}", "jwksUri": "https://i/k"},
    {"issuer": "https://i", "jwksUri": "https://i/k", "tenants": ["a"]},
    {"issuer": "https://i/{tenant}", "discovery": True, "tenants": ["a"]},
    {"issuer": "https://i", "hmacSecretFile": "s"},
    {"issuer": "https://i", "hmacSecretFile": "s", "algorithms": ["HS256", "ES256"]},
    {"issuer": "https://i", "hmacSecretFile": "s", "algorithms": ["HS256"]},
    {"issuer": "https://i", "jwksUri": "https://i/k", "fetch": {"minRefreshSeconds": 7200}},
    {"issuer": "https://i", "jwksUri": "https://i/k", "fetch": {"maxRefreshSeconds": 30}},
    {"issuer": "https://i", "publicKeys": [{"kid": "a", "pem": "x"}, {"file": "y"}]},
    {"issuer": "https://i", "publicKeys": [{"pem": "x", "file": "y"}]},
    {"issuer": "https://i", "jwks": {"keys": [{}]}, "fetch": {"timeoutSeconds": 3}},
    {"issuer": "https://i", "jwksUri": "https://i/k", "fetch": {"caFile": "ca.pem"}},
    {"issuer": "https://i", "jwksUri": "https://i/k", "fetch": {"caBundleRef": CA_REF}},
    {
        "issuer": "https://i",
        "jwksUri": "https://i/k",
        "fetch": {"caBundleRef": {**CA_REF, "namespace": "kube-system"}},
    },
    {
        "issuer": "https://i",
        "jwksUri": "https://i/k",
        "fetch": {"caFile": "a", "caBundleRef": CA_REF},
    },
]


@pytest.mark.parametrize("kind", ["JWTIssuer", "ClusterJWTIssuer"])
def test_key_source_rules_agree_with_the_crd(control_plane: ControlPlane, kind: str) -> None:
    """The cluster source's validation (the namespaced kind has rules files do not) gives the
    API server's verdicts with its messages."""
    control_plane.apply([crd.crd(kind)])
    for spec in SPECS:
        doc = {
            "apiVersion": "authz.io/v1alpha1",
            "kind": kind,
            "metadata": {"name": "rules", "namespace": "default"},
            "spec": spec,
        }
        if kind == "ClusterJWTIssuer":
            del doc["metadata"]["namespace"]
        try:
            validate_document(doc, "f.yaml", "kubernetes")
            ours: list[str] = []
        except PolicyError as exc:
            ours = exc.problems
        try:
            control_plane.apply([doc], dry_run=True)
            theirs = ""
        except KubeError as exc:
            theirs = str(exc)
        assert bool(ours) == bool(theirs), (spec, ours, theirs)
        for (
            problem
        ) in ours:  # "spec.fetch: message" appears as "spec.fetch: Invalid value: message"
            where, message = problem.split(": ", 1)
            assert f"{where}: Invalid value: {message}" in theirs, (spec, problem, theirs)


def _token(cp: ControlPlane, namespace: str, account: str, audience: str) -> str:
    with cp.api_client() as api:
        request = k8s.AuthenticationV1TokenRequest(
            spec=k8s.V1TokenRequestSpec(audiences=[audience], expiration_seconds=600)
        )
        answer = k8s.CoreV1Api(api).create_namespaced_service_account_token(
            account, namespace, request
        )
    value: str = answer.status.token
    return value


def _policies(directory: Path, cp: ControlPlane, namespace: str) -> Path:
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "authz.io/v1alpha1",
            "kind": "ClusterJWTIssuer",
            "metadata": {"name": "cluster"},
            "spec": {
                "issuer": cp.issuer,
                "discovery": True,
                "fetch": {"caFile": str(cp.ca_path)},
            },
        },
        {
            "apiVersion": "authz.io/v1alpha1",
            "kind": "AuthzPolicy",
            "metadata": {"name": "orders", "namespace": "default"},
            "spec": {
                "targets": {"hosts": ["*"]},
                "issuers": [{"name": "cluster", "kind": "ClusterJWTIssuer"}],
                "audiences": [AUDIENCE],
                "rules": [
                    {
                        "name": "same-namespace",
                        "match": {"paths": ["/orders/**"]},
                        "claims": [{"path": "kubernetes\\.io.namespace", "equals": namespace}],
                    }
                ],
                "response": {"headers": [{"name": "x-auth-subject", "claim": "sub"}]},
            },
        },
    ]
    (directory / "policies.yaml").write_text(yaml.safe_dump_all(docs))
    return directory


def test_service_account_tokens(control_plane: ControlPlane, tmp_path: Path) -> None:
    cp = control_plane
    cp.allow_anonymous_oidc_discovery()  # as clusters that publish their issuer do
    namespace, other = f"keys-{uuid.uuid4().hex[:8]}", f"keys-{uuid.uuid4().hex[:8]}"
    cp.apply(
        [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}},
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "orders", "namespace": namespace},
            },
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "intruder", "namespace": other},
            },
        ]
    )
    with check_server(_policies(tmp_path, cp, namespace)) as client:
        deadline = time.monotonic() + 10
        while not (state := client.store.key_states()["ClusterJWTIssuer/cluster"]).ready:
            assert time.monotonic() < deadline, state
            time.sleep(0.02)
        assert state.source == f"discovery {cp.issuer}/.well-known/openid-configuration"

        def check(value: str) -> tuple[int, str, str | None]:
            response = client.check(headers={"authorization": f"Bearer {value}"}, path="/orders/1")
            if response.status.code == 0:
                return 200, "allowed", header(response, "x-auth-subject")
            return response.denied_response.status.code, response.status.message, None

        good = _token(cp, namespace, "orders", AUDIENCE)
        assert check(good) == (200, "allowed", f"system:serviceaccount:{namespace}:orders")
        # The API server's own audience is not ours: such a token is refused.
        assert check(_token(cp, namespace, "orders", cp.issuer))[:2] == (
            401,
            "audience_mismatch",
        )
        assert check(_token(cp, other, "intruder", AUDIENCE))[:2] == (403, "claim_mismatch")
