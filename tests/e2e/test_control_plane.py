"""The real control plane harness (tests/support/kube.py) does what later tests rely on.

Runs against the session's shared etcd + kube-apiserver (``control_plane`` fixture).
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import jwt
import pytest
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from tests.support import kube_fixtures, testbin
from tests.support.kube import OIDC_ANONYMOUS_BINDING, ControlPlane

pytestmark = pytest.mark.e2e

# The session's shared control plane (a conftest may provide these instead; both share one).
control_plane = kube_fixtures.control_plane
control_plane_users = kube_fixtures.control_plane_users

GROUP = "harness.test"
CRD_NAME = f"widgets.{GROUP}"
CEL_MESSAGE = "minReplicas must not exceed maxReplicas"

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": CRD_NAME},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["minReplicas", "maxReplicas"],
                                "properties": {
                                    "minReplicas": {"type": "integer", "minimum": 0},
                                    "maxReplicas": {"type": "integer"},
                                },
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "self.minReplicas <= self.maxReplicas",
                                        "message": CEL_MESSAGE,
                                    }
                                ],
                            },
                            "status": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                        },
                    }
                },
            }
        ],
    },
}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def widget(namespace: str, name: str, lo: int, hi: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Widget",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"minReplicas": lo, "maxReplicas": hi},
    }


@pytest.fixture
def namespace(control_plane: ControlPlane) -> str:
    """A fresh namespace (never deleted: without a controller-manager it would stay
    Terminating anyway)."""
    name = unique("ns")
    control_plane.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}])
    return name


def test_version_is_the_built_kubernetes(control_plane: ControlPlane) -> None:
    _, version = control_plane.request("GET", "/version")
    assert version["gitVersion"] == testbin.KUBERNETES_VERSION
    assert version["gitVersion"].startswith("v1.36.")
    assert (version["major"], version["minor"]) == ("1", "36")


def test_kubeconfig_and_typed_client(control_plane: ControlPlane) -> None:
    with control_plane.api_client() as api:
        assert api.configuration.verify_ssl
        name = unique("ns")
        k8s.CoreV1Api(api).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
        got = k8s.CoreV1Api(api).read_namespace(name)
        assert got.status.phase == "Active"
        info = k8s.VersionApi(api).get_code()
        assert info.git_version == testbin.KUBERNETES_VERSION


def test_crd_established_and_cel_validation(control_plane: ControlPlane, namespace: str) -> None:
    crd = control_plane.apply([WIDGET_CRD])[0]
    assert crd["metadata"]["managedFields"][0]["manager"] == "authz-tests"
    conditions = control_plane.wait_crd_established(CRD_NAME)["status"]["conditions"]
    assert any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    ok = control_plane.apply([widget(namespace, "good", 1, 3)])[0]
    assert ok["spec"] == {"minReplicas": 1, "maxReplicas": 3}

    with control_plane.api_client() as api:
        custom = k8s.CustomObjectsApi(api)
        with pytest.raises(ApiException) as bad:
            custom.create_namespaced_custom_object(
                GROUP, "v1", namespace, "widgets", widget(namespace, "bad", 5, 2)
            )
    assert bad.value.status == 422
    assert CEL_MESSAGE in str(bad.value.body)
    # Server-side apply goes through the same validation.
    status, body = control_plane.request(
        "PATCH",
        control_plane.resource_path(widget(namespace, "bad", 5, 2)),
        widget(namespace, "bad", 5, 2),
        query={"fieldManager": "authz-tests"},
        content_type="application/apply-patch+yaml",
        check=False,
    )
    assert status == 422
    assert CEL_MESSAGE in body["message"]


def test_watch_receives_added(control_plane: ControlPlane, namespace: str) -> None:
    name = unique("cm")
    events: list[tuple[str, str]] = []
    with control_plane.api_client() as api:
        core = k8s.CoreV1Api(api)
        rv = core.list_namespaced_config_map(namespace).metadata.resource_version

        def create_later() -> None:
            time.sleep(0.5)
            control_plane.apply(
                [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": name, "namespace": namespace},
                        "data": {"k": "v"},
                    }
                ]
            )

        creator = threading.Thread(target=create_later)
        creator.start()
        w = k8s_watch.Watch()
        try:
            for event in w.stream(
                core.list_namespaced_config_map,
                namespace,
                resource_version=rv,
                timeout_seconds=20,
            ):
                events.append((event["type"], event["object"].metadata.name))
                if event["object"].metadata.name == name:
                    break
        finally:
            w.stop()
            creator.join()
    assert ("ADDED", name) in events


def test_rbac_forbids_user_without_permissions(control_plane: ControlPlane, namespace: str) -> None:
    nobody = control_plane.token_for("nobody", [])
    status, body = control_plane.request("GET", "/api/v1/namespaces", token=nobody, check=False)
    assert status == 403, body
    assert body["reason"] == "Forbidden"
    assert 'User "nobody"' in body["message"]
    # The typed client sees the same 403.
    with control_plane.client_for("nobody") as api, pytest.raises(ApiException) as denied:
        k8s.CoreV1Api(api).list_namespaced_config_map(namespace)
    assert denied.value.status == 403
    # A bad token is 401, not 403.
    assert control_plane.request("GET", "/api", token="not-a-token", check=False)[0] == 401

    # Granting a Role to alice's group makes the same request succeed.
    control_plane.apply(
        [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "cm-reader", "namespace": namespace},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "team-a-reads", "namespace": namespace},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "cm-reader",
                },
                "subjects": [
                    {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Group",
                        "name": "authz:team-a",
                    }
                ],
            },
        ]
    )
    alice = control_plane.token_for("alice", ["authz:team-a"])
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    deadline = time.monotonic() + 10
    while (status := control_plane.request("GET", path, token=alice, check=False)[0]) != 200:
        assert status == 403
        assert time.monotonic() < deadline, "RoleBinding never took effect"
        time.sleep(0.1)
    bob = control_plane.token_for("bob", ["authz:team-b"])
    assert control_plane.request("GET", path, token=bob, check=False)[0] == 403


def test_token_request_and_oidc_discovery(control_plane: ControlPlane, namespace: str) -> None:
    cp = control_plane
    cp.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "workload", "namespace": namespace},
            }
        ]
    )
    with cp.api_client() as api:
        tr = k8s.CoreV1Api(api).create_namespaced_service_account_token(
            "workload",
            namespace,
            k8s.AuthenticationV1TokenRequest(
                spec=k8s.V1TokenRequestSpec(audiences=["authz-tests"], expiration_seconds=600)
            ),
        )
    token = tr.status.token
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert header["alg"] == "RS256"
    assert claims["iss"] == cp.issuer
    assert claims["aud"] == ["authz-tests"]
    assert claims["sub"] == f"system:serviceaccount:{namespace}:workload"

    # Discovery with credentials (the admin's).
    _, discovery = cp.request("GET", "/.well-known/openid-configuration")
    assert discovery["issuer"] == cp.issuer
    assert discovery["jwks_uri"] == f"{cp.issuer}/openid/v1/jwks"
    _, jwks = cp.request("GET", "/openid/v1/jwks")
    # The JWKS is served only as application/jwk-set+json: a client that accepts nothing but
    # application/json gets 406 (JWKS fetchers must send */* or the jwk-set type).
    only_json = {"Accept": "application/json"}
    assert cp.request("GET", "/openid/v1/jwks", headers=only_json, check=False)[0] == 406
    jwk_type = {"Accept": "application/jwk-set+json"}
    assert cp.request("GET", "/openid/v1/jwks", headers=jwk_type)[1] == jwks
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    verified = jwt.decode(
        token,
        jwt.PyJWK(key).key,
        algorithms=["RS256"],
        audience="authz-tests",
        issuer=cp.issuer,
    )
    assert verified["kubernetes.io"]["serviceaccount"]["name"] == "workload"

    # A token for another audience does not authenticate to the API server (401); one for
    # the API's audience does, and service accounts may read discovery (default RBAC).
    assert cp.request("GET", "/openid/v1/jwks", token=token, check=False)[0] == 401
    with cp.api_client() as api:
        api_tr = k8s.CoreV1Api(api).create_namespaced_service_account_token(
            "workload", namespace, k8s.AuthenticationV1TokenRequest(spec=k8s.V1TokenRequestSpec())
        )
    assert cp.request("GET", "/openid/v1/jwks", token=api_tr.status.token, check=False)[0] == 200

    # Unauthenticated: forbidden until system:unauthenticated is bound to the discovery role.
    with cp.api_client() as api:
        rbac = k8s.RbacAuthorizationV1Api(api)
        bound = any(
            b.metadata.name == OIDC_ANONYMOUS_BINDING
            for b in rbac.list_cluster_role_binding().items
        )
    if not bound:
        status, body = cp.request(
            "GET", "/.well-known/openid-configuration", token=None, check=False
        )
        assert status == 403, body
    cp.allow_anonymous_oidc_discovery()
    status, anon = cp.request("GET", "/.well-known/openid-configuration", token=None, check=False)
    assert status == 200
    assert anon["issuer"] == cp.issuer
    assert cp.request("GET", "/openid/v1/jwks", token=None, check=False)[1] == jwks


def test_restart_apiserver_keeps_data(control_plane: ControlPlane, namespace: str) -> None:
    cp = control_plane
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "survivor", "namespace": namespace},
        "data": {"before": "restart"},
    }
    cp.apply([cm])
    url, ca = cp.url, cp.ca_path.read_bytes()

    cp.restart_apiserver(kill=True)
    assert cp.apiserver_start_seconds is not None
    print(f"kube-apiserver restart (SIGKILL) ready after {cp.apiserver_start_seconds:.1f}s")
    assert cp.url == url
    assert cp.ca_path.read_bytes() == ca
    _, got = cp.request("GET", cp.resource_path(cm))
    assert got["data"] == {"before": "restart"}
    # Static tokens still work and the kubeconfig still points at the right place.
    with cp.api_client() as api:
        assert k8s.CoreV1Api(api).read_namespaced_config_map("survivor", namespace).data == {
            "before": "restart"
        }

    cp.restart_apiserver()  # graceful (SIGTERM)
    assert cp.request("GET", cp.resource_path(cm))[1]["data"] == {"before": "restart"}


def test_unregistered_user_is_rejected_while_running(control_plane: ControlPlane) -> None:
    with pytest.raises(KeyError, match="not registered"):
        control_plane.token_for("mallory", ["x"])
    with pytest.raises(KeyError, match="registered with groups"):
        control_plane.token_for("alice", ["authz:team-b"])
