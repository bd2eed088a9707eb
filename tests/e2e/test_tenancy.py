"""The cross-namespace takeover of issue 11, item 1, against a real kube-apiserver.

A tenant whose RBAC is limited to its namespace (a ServiceAccount bound to a namespaced
Role, authenticating with its own TokenRequest token) creates a JWTIssuer claiming the
victim's `iss` with its own key, and AuthzPolicies for the victim's exact host, a wildcard
over it, `*` and the victim's contextExtensions binding, all allowing its token with
`sub: root`. Before, its namespace sorted first and won every tie: the victim's upstream
received `x-auth-subject: root`. Now the victim's decisions do not change (over gRPC
Check), and the tenant's objects say why in status and Events. A host the admin grants to
both namespaces stays with the older policy, and the newer one is told it conflicts.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz.devtools import generate_key, mint_token
from authz.policy import crd, schema
from tests.e2e.conftest import AuthzFactory, AuthzServer
from tests.support.docs import write
from tests.support.keyserver import KeyServer, make_ca
from tests.support.kube import ControlPlane, KubeError
from tests.support.kube_fixtures import control_plane, control_plane_users  # noqa: F401

VICTIM_ISS = "https://sso.shop.test"
VICTIM_KEY = generate_key("ES256", "shop-1")
TENANT_KEY = generate_key("ES256", "tenant-1")
NS_KEY = schema.NAMESPACE_CONTEXT_KEY


@dataclass(frozen=True)
class Namespaces:
    victim: str
    tenant: str  # sorts before the victim: it used to win every tie


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane) -> ControlPlane:  # noqa: F811
    control_plane.apply([crd.crd(kind) for kind in schema.KINDS])
    return control_plane


@pytest.fixture
def namespaces(cluster: ControlPlane) -> Iterator[Namespaces]:
    suffix = uuid.uuid4().hex[:6]
    names = Namespaces(victim=f"shop-{suffix}", tenant=f"aaa-tenant-{suffix}")
    cluster.apply(
        [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
            for n in (names.victim, names.tenant)
        ]
    )
    yield names
    for grant in ("victim", "shared"):
        cluster.delete(_grant(f"{grant}-{suffix}", [], []))


def _grant(name: str, hosts: list[str], namespaces: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": schema.API_VERSION,
        "kind": "HostGrant",
        "metadata": {"name": name},
        "spec": {"hosts": hosts, "namespaces": namespaces},
    }


def _doc(kind: str, ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    meta = {"name": name, "namespace": ns}
    return {"apiVersion": schema.API_VERSION, "kind": kind, "metadata": meta, "spec": spec}


def _issuer(ns: str, key: dict[str, Any]) -> dict[str, Any]:
    spec = {"issuer": VICTIM_ISS, "jwks": {"keys": [key]}, "audiences": ["shop"]}
    return _doc("JWTIssuer", ns, "idp", spec)


def _policy(ns: str, name: str, **targets: Any) -> dict[str, Any]:
    spec = {
        "targets": targets,
        "issuers": [{"name": "idp"}],
        "rules": [{"name": "all", "match": {"paths": ["/**"]}}],
    }
    return _doc("AuthzPolicy", ns, name, spec)


def _token(key: dict[str, Any], sub: str) -> str:
    now = int(time.time())
    claims = {"iss": VICTIM_ISS, "sub": sub, "aud": "shop", "iat": now, "exp": now + 600}
    return mint_token(key, claims)


def _tenant_token(cp: ControlPlane, ns: str) -> str:
    """A ServiceAccount allowed to manage JWTIssuers and AuthzPolicies in its namespace only."""
    verbs = ["get", "list", "watch", "create", "update", "patch", "delete"]
    rules = [
        {"apiGroups": [schema.GROUP], "resources": ["jwtissuers", "authzpolicies"], "verbs": verbs},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": verbs},
    ]
    binding_subject = {"kind": "ServiceAccount", "name": "tenant", "namespace": ns}
    cp.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "tenant", "namespace": ns},
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "authz-tenant", "namespace": ns},
                "rules": rules,
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "authz-tenant", "namespace": ns},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "authz-tenant",
                },
                "subjects": [binding_subject],
            },
        ]
    )
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}
    _, out = cp.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/tenant/token", body)
    token: str = out["status"]["token"]
    return token


def _apply_as(cp: ControlPlane, token: str, doc: dict[str, Any]) -> None:
    """Server-side apply with the tenant's own credentials (403 outside its Role)."""
    cp.request(
        "PATCH",
        cp.resource_path(doc),
        doc,
        token=token,
        query={"fieldManager": "tenant", "force": "true"},
        content_type="application/apply-patch+yaml",
    )


class Checker:
    def __init__(self, server: AuthzServer) -> None:
        self.stub = external_auth_pb2_grpc.AuthorizationStub(
            grpc.insecure_channel(server.grpc_addr)
        )

    def check(
        self, host: str, token: str | None = None, context: dict[str, str] | None = None
    ) -> tuple[int, str | None]:
        """(status, the x-auth-subject the upstream would receive)."""
        request = external_auth_pb2.CheckRequest()
        http = request.attributes.request.http
        http.method, http.host, http.path = "GET", host, "/orders/1"
        if token:
            http.headers["authorization"] = f"Bearer {token}"
        request.attributes.context_extensions.update(context or {})
        response = self.stub.Check(request, timeout=5)
        if response.status.code != 0:
            return int(response.denied_response.status.code), None
        subject = next(
            (
                h.header.value
                for h in response.ok_response.headers
                if h.header.key == "x-auth-subject"
            ),
            None,
        )
        return 200, subject


def _status(cp: ControlPlane, doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    _, obj = cp.request("GET", cp.resource_path(doc))
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}


def _eventually(check: Callable[[], bool], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def _start(factory: AuthzFactory, cp: ControlPlane, names: Namespaces, tmp: Path) -> AuthzServer:
    empty = tmp / "empty"
    empty.mkdir(exist_ok=True)
    return factory(
        empty,
        extra_args=[
            "--kubernetes",
            "--kubeconfig",
            str(cp.kubeconfig_path),
            "--watch-namespaces",
            f"{names.victim},{names.tenant}",
            "--leader-election-namespace",
            names.victim,
        ],
        env={"POD_NAME": "authz-0", "POD_NAMESPACE": "authz-system"},
    )


def test_a_tenant_cannot_take_over_another_namespace(
    cluster: ControlPlane, namespaces: Namespaces, authz_server: AuthzFactory, tmp_path: Path
) -> None:
    victim, tenant = namespaces.victim, namespaces.tenant
    suffix = victim.removeprefix("shop-")
    # The cluster admin: the victim's hosts, its issuer and policies (exact, wildcard, `*`,
    # and a route binding that Envoy's route names with the victim's namespace).
    cluster.apply(
        [
            _grant(f"victim-{suffix}", ["shop.test", "*.shop.test", "*"], [victim]),
            _issuer(victim, VICTIM_KEY[1]),
            _policy(victim, "exact", hosts=["shop.test"]),
            _policy(victim, "wildcard", hosts=["*.shop.test"]),
            _policy(victim, "catch-all", hosts=["*"]),
            _policy(victim, "bound", contextExtensions={"policy": "orders"}),
        ]
    )
    check = Checker(_start(authz_server, cluster, namespaces, tmp_path))
    victim_token, forged = _token(VICTIM_KEY[0], "alice"), _token(TENANT_KEY[0], "root")
    requests = [
        ("shop.test", None),
        ("api.shop.test", None),
        ("elsewhere.test", None),
        ("shop.test", {"policy": "orders", NS_KEY: victim}),
    ]
    _eventually(lambda: check.check("shop.test", victim_token) == (200, "alice"))

    def decisions() -> list[tuple[tuple[int, str | None], ...]]:
        return [
            tuple(check.check(host, t, context) for t in (None, victim_token, forged))
            for host, context in requests
        ]

    before = decisions()
    assert before == [((401, None), (200, "alice"), (401, None))] * len(requests)

    # The tenant, with its own token: may write its namespace, nothing else.
    token = _tenant_token(cluster, tenant)
    attack = [
        _issuer(tenant, TENANT_KEY[1]),  # claims the victim's iss, with the tenant's key
        _policy(tenant, "exact", hosts=["shop.test"]),
        _policy(tenant, "wildcard", hosts=["*.shop.test"]),
        _policy(tenant, "any", hosts=["*"]),
        _policy(tenant, "bound", contextExtensions={"policy": "orders"}),
    ]
    for doc in attack:
        _apply_as(cluster, token, doc)
    for forbidden in (
        _grant(f"tenant-{suffix}", ["*"], [tenant]),
        _policy(victim, "x", hosts=["*"]),
    ):
        with pytest.raises(KubeError) as info:
            _apply_as(cluster, token, forbidden)
        assert info.value.status == 403

    not_granted = attack[1:4]
    _eventually(
        lambda: all(
            _status(cluster, d).get("Accepted", {}).get("reason") == "HostNotGranted"
            for d in not_granted
        )
    )
    _eventually(lambda: _status(cluster, attack[4]).get("Ready", {}).get("status") == "True")
    message = _status(cluster, attack[1])["Accepted"]["message"]
    assert f"host 'shop.test' is not granted to namespace '{tenant}'" in message
    assert decisions() == before  # not one decision for the victim's traffic changed

    # The tenant's binding serves routes the proxy assigned to the tenant's namespace only.
    own_route = {"policy": "orders", NS_KEY: tenant}
    assert check.check("tenant.test", forged, own_route) == (200, "root")

    _, events = cluster.request("GET", f"/api/v1/namespaces/{tenant}/events")
    warned = {
        e["involvedObject"]["name"]
        for e in events["items"]
        if e["type"] == "Warning" and e["reason"] == "HostNotGranted"
    }
    assert warned == {"exact", "wildcard", "any"}


def test_a_host_granted_twice_stays_with_the_older_policy(
    cluster: ControlPlane, namespaces: Namespaces, authz_server: AuthzFactory, tmp_path: Path
) -> None:
    victim, tenant = namespaces.victim, namespaces.tenant
    suffix = victim.removeprefix("shop-")
    cluster.apply(
        [
            _grant(f"shared-{suffix}", ["shared.test"], [victim, tenant]),
            _issuer(victim, VICTIM_KEY[1]),
            _policy(victim, "shared", hosts=["shared.test"]),
        ]
    )
    check = Checker(_start(authz_server, cluster, namespaces, tmp_path))
    victim_token, forged = _token(VICTIM_KEY[0], "alice"), _token(TENANT_KEY[0], "root")
    _eventually(lambda: check.check("shared.test", victim_token) == (200, "alice"))
    time.sleep(1.1)  # creationTimestamp has one-second resolution: the tenant is younger
    token = _tenant_token(cluster, tenant)
    late = _policy(tenant, "shared", hosts=["shared.test"])
    for doc in (_issuer(tenant, TENANT_KEY[1]), late):
        _apply_as(cluster, token, doc)
    _eventually(lambda: _status(cluster, late).get("Accepted", {}).get("reason") == "Conflict")
    message = _status(cluster, late)["Accepted"]["message"]
    assert f"host 'shared.test' is served by AuthzPolicy/{victim}/shared" in message
    assert check.check("shared.test", forged) == (401, None)
    assert check.check("shared.test", victim_token) == (200, "alice")
    _, events = cluster.request("GET", f"/api/v1/namespaces/{tenant}/events")
    assert any(
        e["involvedObject"]["name"] == "shared" and e["reason"] == "Conflict"
        for e in events["items"]
    )


def test_a_tenant_issuer_cannot_probe_what_the_authorizer_reaches(
    cluster: ControlPlane, namespaces: Namespaces, authz_server: AuthzFactory, tmp_path: Path
) -> None:
    """Issue 11, item 3: a namespaced JWTIssuer pointing its key URL at the authorizer's own
    host gets no connection, and its status says only that keys could not be fetched (the
    cause is in the log). Its CA bundle comes from a ConfigMap in its namespace; an admin's
    ClusterJWTIssuer may name that namespace and fetch from anywhere."""
    tenant = namespaces.tenant
    ca = make_ca(tmp_path / "pki")
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "idp-ca", "namespace": tenant},
        "data": {"ca.pem": ca.ca_file.read_text()},
    }
    with KeyServer(ca) as local:
        local.json("/jwks", {"keys": [TENANT_KEY[1]]})
        server = _start(authz_server, cluster, namespaces, tmp_path)
        token = _tenant_token(cluster, tenant)
        _apply_as(cluster, token, configmap)
        ref = {"name": "idp-ca", "key": "ca.pem"}
        probe = _doc(
            "JWTIssuer",
            tenant,
            "probe",
            {
                "issuer": "https://probe.test",
                "jwksUri": f"{local.url}/jwks",
                "fetch": {"caBundleRef": ref},
            },
        )
        _apply_as(cluster, token, probe)

        def keys(doc: dict[str, Any]) -> dict[str, Any]:
            _, obj = cluster.request("GET", cluster.resource_path(doc))
            found: dict[str, Any] = (obj.get("status") or {}).get("keys") or {}
            return found

        # Key state reaches status on the writer's next pass: a rebuild, or every 30 s.
        _eventually(lambda: "lastError" in keys(probe), within=40)
        assert keys(probe)["lastError"] == "keys could not be fetched; the authz log has the cause"
        assert _status(cluster, probe)["KeysReady"]["status"] == "False"
        assert "127.0.0.1" not in str(_status(cluster, probe))
        assert local.hits("/jwks") == 0
        _eventually(lambda: "(loopback)" in server.process.output())  # the log has the cause

        admin = {
            "apiVersion": schema.API_VERSION,
            "kind": "ClusterJWTIssuer",
            "metadata": {"name": f"admin-{tenant}"},
            "spec": {
                "issuer": "https://admin.test",
                "jwksUri": f"{local.url}/jwks",
                "fetch": {"caBundleRef": {**ref, "namespace": tenant}},
            },
        }
        cluster.apply([admin])
        try:
            _eventually(lambda: keys(admin).get("ready") is True, within=40)
            assert local.hits("/jwks") >= 1
        finally:
            cluster.delete(admin)


def test_a_cluster_object_cannot_replace_a_policy_file(
    cluster: ControlPlane, namespaces: Namespaces, authz_server: AuthzFactory, tmp_path: Path
) -> None:
    """Issue 11, item 2: an AuthzPolicy created in the cluster with the key of a policy-file
    object used to replace it in silence. The file (the admin's) serves; the cluster object
    is refused with a Conflict condition and Event; the server's log names both."""
    victim = namespaces.victim
    suffix = victim.removeprefix("shop-")
    files = tmp_path / "policies"
    files.mkdir()
    write(
        files / "shop.yaml",
        _issuer(victim, VICTIM_KEY[1]),
        _policy(victim, "orders", hosts=["shop.test"]),
    )
    cluster.apply([_grant(f"victim-{suffix}", ["*"], [victim])])
    server = authz_server(
        files,
        extra_args=[
            "--kubernetes",
            "--kubeconfig",
            str(cluster.kubeconfig_path),
            "--watch-namespaces",
            victim,
            "--leader-election-namespace",
            victim,
        ],
        env={"POD_NAME": "authz-0", "POD_NAMESPACE": "authz-system"},
    )
    check = Checker(server)
    impostor = _policy(victim, "orders", hosts=["*"])
    impostor["spec"] = {
        "targets": {"hosts": ["*"]},
        "rules": [{"name": "all", "action": "allowAnonymous"}],
    }
    cluster.apply([impostor])
    _eventually(lambda: _status(cluster, impostor).get("Accepted", {}).get("reason") == "Conflict")
    assert (
        "also defined in the policy directory" in _status(cluster, impostor)["Accepted"]["message"]
    )
    assert check.check("shop.test") == (401, None)  # the file's policy: a token is required
    assert check.check("elsewhere.test") == (403, None)  # the impostor's `*` serves nothing
    assert check.check("shop.test", _token(VICTIM_KEY[0], "alice")) == (200, "alice")
    _, events = cluster.request("GET", f"/api/v1/namespaces/{victim}/events")
    assert any(
        e["involvedObject"]["name"] == "orders" and e["reason"] == "Conflict"
        for e in events["items"]
    )
    note = f"also defined by kubernetes AuthzPolicy/{victim}/orders, which is refused"
    _eventually(lambda: note in server.process.output())  # log lines are flushed every 200 ms
