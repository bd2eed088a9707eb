"""Cluster mode against a real etcd + kube-apiserver: CRD validation, watch-driven
decisions within a second, truthful status, one status writer of two, API server restarts."""

from __future__ import annotations

import base64
import json
import statistics
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz.devtools import generate_key, mint_token
from authz.policy import crd, schema
from authz.policy.kube import KubeSource, _Gone
from authz.policy.store import PolicyStore
from tests.e2e.conftest import AuthzFactory, AuthzServer
from tests.support.dpop import DPoPClient
from tests.support.kube import ControlPlane, KubeError
from tests.support.kube_fixtures import control_plane, control_plane_users  # noqa: F401
from tests.support.procs import http_request

ISS = "https://idp.cluster.test"
KEYS = generate_key("ES256", "c1")


@pytest.fixture(scope="module")
def crds(control_plane: ControlPlane) -> ControlPlane:  # noqa: F811
    control_plane.apply([crd.crd(kind) for kind in schema.KINDS])
    return control_plane


@pytest.fixture
def namespace(crds: ControlPlane) -> Iterator[str]:
    """A fresh namespace whose policies may target any host (a HostGrant for `*`)."""
    name = f"ctl-{uuid.uuid4().hex[:8]}"
    grant = {
        "apiVersion": schema.API_VERSION,
        "kind": "HostGrant",
        "metadata": {"name": name},
        "spec": {"hosts": ["*"], "namespaces": [name]},
    }
    crds.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}, grant])
    yield name
    crds.delete(grant)


def issuer(ns: str, name: str = "idp", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": schema.API_VERSION,
        "kind": "JWTIssuer",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"issuer": ISS, "jwks": {"keys": [KEYS[1]]}, "audiences": ["api"], **spec},
    }


def policy(ns: str, name: str = "api", *, host: str = "api.test", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "targets": {"hosts": [host]},
        "issuers": [{"name": "idp"}],
        "rules": [
            {"name": "read", "match": {"paths": ["/**"]}, "requireScopes": {"allOf": ["read"]}}
        ],
    }
    body.update(spec)
    return {
        "apiVersion": schema.API_VERSION,
        "kind": "AuthzPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": body,
    }


def token(**claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISS, "sub": "u", "aud": "api", "iat": now, "exp": now + 600, "scope": "read"}
    body.update(claims)
    return mint_token(KEYS[0], body)


class Checker:
    def __init__(self, server: AuthzServer) -> None:
        self.channel = grpc.insecure_channel(server.grpc_addr)
        self.stub = external_auth_pb2_grpc.AuthorizationStub(self.channel)

    def status(self, value: str | None = None, host: str = "api.test") -> int:
        request = external_auth_pb2.CheckRequest()
        http = request.attributes.request.http
        http.method, http.host, http.path = "GET", host, "/x"
        if value:
            http.headers["authorization"] = f"Bearer {value}"
        response = self.stub.Check(request, timeout=5)
        return 200 if response.status.code == 0 else int(response.denied_response.status.code)

    def wait_for(
        self, expected: int, value: str | None = None, host: str = "api.test", within: float = 1.0
    ) -> float:
        """Poll until the decision is `expected`; returns how long it took."""
        started = time.monotonic()
        while True:
            got = self.status(value, host)
            elapsed = time.monotonic() - started
            if got == expected:
                return elapsed
            assert elapsed < within, f"expected {expected} within {within}s, still {got}"
            time.sleep(0.01)


def start(
    authz_server: AuthzFactory, cp: ControlPlane, ns: str, tmp_path: Path, pod: str = "authz-0"
) -> AuthzServer:
    empty = tmp_path / f"empty-{pod}"
    empty.mkdir(exist_ok=True)
    return authz_server(
        empty,
        extra_args=[
            "--kubernetes",
            "--kubeconfig",
            str(cp.kubeconfig_path),
            "--watch-namespaces",
            ns,
            "--leader-election-namespace",
            ns,
        ],
        env={"POD_NAME": pod, "POD_NAMESPACE": ns},
    )


def conditions(cp: ControlPlane, doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    _, obj = cp.request("GET", cp.resource_path(doc))
    return {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}


def eventually(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_changes_are_enforced_within_a_second(
    crds: ControlPlane, namespace: str, authz_server: AuthzFactory, tmp_path: Path
) -> None:
    server = start(authz_server, crds, namespace, tmp_path)
    check = Checker(server)
    timings = []
    assert check.status(token()) == 403  # nothing declared yet: no policy
    crds.apply([issuer(namespace), policy(namespace)])
    timings.append(check.wait_for(200, token()))
    tightened = policy(
        namespace, rules=[{"name": "r", "requireScopes": {"allOf": ["read", "write"]}}]
    )
    crds.apply([tightened])
    timings.append(check.wait_for(403, token()))
    crds.apply([issuer(namespace, audiences=["other"]), policy(namespace)])
    timings.append(check.wait_for(401, token()))  # issuer update: audience no longer accepted
    crds.apply([issuer(namespace)])
    timings.append(check.wait_for(200, token()))
    crds.delete(issuer(namespace))
    timings.append(check.wait_for(401, token()))  # policy no longer trusts a deleted issuer
    crds.delete(policy(namespace))
    timings.append(check.wait_for(403, token()))
    print(
        f"propagation: max {max(timings) * 1000:.0f} ms, median {statistics.median(timings) * 1000:.0f} ms"
    )
    assert "authz_policy_propagation_seconds_count" in server.metrics()


def test_status_tells_the_truth(
    crds: ControlPlane, namespace: str, authz_server: AuthzFactory, tmp_path: Path
) -> None:
    start(authz_server, crds, namespace, tmp_path)
    good, orphan = (
        policy(namespace),
        policy(namespace, "orphan", issuers=[{"name": "missing"}], host="o.test"),
    )
    broken = policy(
        namespace, "broken", host="b.test", rules=[{"claims": [{"path": "e", "regex": "(x"}]}]
    )
    crds.apply([issuer(namespace), good, orphan, broken])
    eventually(lambda: conditions(crds, good).get("Ready", {}).get("status") == "True")
    eventually(lambda: conditions(crds, broken).get("Ready", {}).get("reason") == "Invalid")
    assert "regex" in conditions(crds, broken)["Accepted"]["message"]
    eventually(lambda: conditions(crds, orphan).get("ResolvedRefs", {}).get("status") == "False")
    assert (
        "JWTIssuer/" + namespace + "/missing" in conditions(crds, orphan)["ResolvedRefs"]["message"]
    )
    ready = conditions(crds, issuer(namespace))["Ready"]
    assert ready["status"] == "True" and ready["observedGeneration"] == 1
    _, events = crds.request("GET", f"/api/v1/namespaces/{namespace}/events")
    assert any(
        e["involvedObject"]["name"] == "broken" and e["type"] == "Warning" for e in events["items"]
    )


def test_invalid_edit_keeps_last_good_version(
    crds: ControlPlane, namespace: str, authz_server: AuthzFactory, tmp_path: Path
) -> None:
    check = Checker(start(authz_server, crds, namespace, tmp_path))
    crds.apply([issuer(namespace), policy(namespace)])
    check.wait_for(200, token())
    bad = policy(namespace, rules=[{"name": "r", "claims": [{"path": "e", "regex": "(x"}]}])
    crds.apply([bad])
    eventually(lambda: conditions(crds, bad).get("Ready", {}).get("reason") == "ServingLastGood")
    assert check.status(token()) == 200


CEL_CASES = [
    ("issuer without a key source", lambda ns: _drop(issuer(ns), "jwks"), "exactly one key source"),
    (
        "issuer with two key sources",
        lambda ns: issuer(ns, jwksFile="k.json"),
        "exactly one key source",
    ),
    (
        "token source with two places",
        lambda ns: issuer(ns, tokenSources=[{"cookie": {"name": "a"}, "query": {"name": "b"}}]),
        "exactly one of header, cookie, query",
    ),
    ("policy without targets", lambda ns: policy(ns, targets={}), "at least one target"),
    (
        "scopes on an anonymous rule",
        lambda ns: policy(
            ns, rules=[{"action": "allowAnonymous", "requireScopes": {"allOf": ["a"]}}]
        ),
        "need action requireToken",
    ),
    (
        "claim condition with two operators",
        lambda ns: policy(ns, rules=[{"claims": [{"path": "a", "regex": "x", "present": True}]}]),
        "at most one of present, regex, maxAgeSeconds, atLeast/atMost may be set",
    ),
    ("algorithm none", lambda ns: issuer(ns, algorithms=["none"]), "Unsupported value"),
    (
        "hmac secret without HS algorithms",
        lambda ns: _drop(issuer(ns, hmacSecretFile="secret"), "jwks"),
        "hmacSecretFile and hmacSecretRef need algorithms listing only HS256",
    ),
    (
        "tenants without a template",
        lambda ns: issuer(ns, tenants=["a"]),
        "tenants and a {tenant} placeholder",
    ),
    (
        "discovery with a template",
        lambda ns: _drop(
            issuer(ns, issuer="https://i/{tenant}", tenants=["a"], discovery=True), "jwks"
        ),
        "discovery and discoveryUrl need a fixed issuer",
    ),
    (
        "discoveryUrl with a template",
        lambda ns: _drop(
            issuer(
                ns,
                issuer="https://i/{tenant}",
                tenants=["a"],
                discoveryUrl="https://i/a/.well-known/openid-configuration",
            ),
            "jwks",
        ),
        "discovery and discoveryUrl need a fixed issuer",
    ),
    (
        "tenantClaim without tenants",
        lambda ns: issuer(ns, tenantClaim="tid"),
        "tenantClaim needs tenants",
    ),
    (
        "required claim without an operator",
        lambda ns: issuer(ns, requiredClaims=[{"path": "token_use", "equals": "access", "in": []}]),
        "should have at least 1 items",
    ),
    (
        "required claim with two operators",
        lambda ns: issuer(
            ns, requiredClaims=[{"path": "token_use", "regex": "a.*", "present": True}]
        ),
        "at most one of present, regex, maxAgeSeconds, atLeast/atMost may be set",
    ),
    (
        "header condition with two operators",
        lambda ns: policy(
            ns, rules=[{"match": {"headers": [{"name": "x", "equals": "a", "prefix": "b"}]}}]
        ),
        "exactly one of present, equals, in, prefix, regex must be set",
    ),
    (
        "remoteIpBlocks without xffNumTrustedHops",
        lambda ns: policy(ns, rules=[{"match": {"remoteIpBlocks": ["10.0.0.0/8"]}}]),
        "remoteIpBlocks and notRemoteIpBlocks need xffNumTrustedHops",
    ),
    (
        "audiences on a deny rule",
        lambda ns: policy(ns, rules=[{"action": "deny", "audiences": ["a"]}]),
        "issuers and audiences do not apply to deny rules",
    ),
    (
        "a redirect with a 4xx status",
        lambda ns: policy(
            ns,
            denyWith={"unauthenticated": {"status": 401, "redirect": {"url": "https://login"}}},
        ),
        "a redirect goes with a 3xx status, and a 3xx status with a redirect",
    ),
    (
        "a rule's 3xx without a redirect",
        lambda ns: policy(ns, rules=[{"denyWith": {"unauthorized": {"status": 302}}}]),
        "a redirect goes with a 3xx status, and a 3xx status with a redirect",
    ),
    (
        "a deny header that frames the response",
        lambda ns: policy(
            ns,
            denyWith={
                "unauthenticated": {"headers": [{"name": "Transfer-Encoding", "value": "x"}]}
            },
        ),
        "denyWith headers cannot set content-length",
    ),
    (
        "a header value with a line break",
        lambda ns: policy(
            ns,
            denyWith={"unauthorized": {"headers": [{"name": "x", "value": "a\r\nset-cookie: b"}]}},
        ),
        "should match",
    ),
    (
        "plain http key url",
        lambda ns: _drop(issuer(ns, jwksUri="http://idp.test/jwks"), "jwks"),
        "must use https unless fetch.allowInsecureHttp",
    ),
    (
        "fetch on local keys",
        lambda ns: issuer(ns, fetch={"refreshSeconds": 60}),
        "fetch applies only to remote",
    ),
    (
        "refresh bounds crossed",
        lambda ns: _drop(
            issuer(
                ns,
                jwksUri="https://idp.test/jwks",
                fetch={"minRefreshSeconds": 100, "maxRefreshSeconds": 50},
            ),
            "jwks",
        ),
        "minRefreshSeconds must not exceed maxRefreshSeconds",
    ),
    (
        "public key without pem or file",
        lambda ns: _drop(issuer(ns, publicKeys=[{"kid": "a"}]), "jwks"),
        "exactly one of pem, file must be set",
    ),
    ("no rules", lambda ns: policy(ns, rules=[]), "should have at least 1 items"),
    (
        "requireDPoP without a dpop block",
        lambda ns: policy(ns, rules=[{"name": "pay", "requireDPoP": True}]),
        "rules with requireDPoP need the policy's dpop block",
    ),
    (
        "two CA bundles",
        lambda ns: _drop(
            issuer(
                ns,
                jwksUri="https://idp.test/jwks",
                fetch={"caFile": "ca.pem", "caBundleRef": {"name": "ca", "key": "ca.pem"}},
            ),
            "jwks",
        ),
        "set at most one of fetch.caFile, fetch.caBundleRef",
    ),
    (
        "plain http on a namespaced issuer",
        lambda ns: _drop(
            issuer(ns, jwksUri="http://idp.test/jwks", fetch={"allowInsecureHttp": True}), "jwks"
        ),
        "fetches keys over https only",
    ),
    (
        "a CA file on a namespaced issuer",
        lambda ns: _drop(
            issuer(ns, jwksUri="https://idp.test/jwks", fetch={"caFile": "/etc/hostname"}), "jwks"
        ),
        "fetch.caFile reads the authorizer's filesystem",
    ),
    (
        "a CA bundle from another namespace",
        lambda ns: _drop(
            issuer(
                ns,
                jwksUri="https://idp.test/jwks",
                fetch={"caBundleRef": {"name": "ca", "key": "k", "namespace": "kube-system"}},
            ),
            "jwks",
        ),
        "caBundleRef.namespace is for ClusterJWTIssuers",
    ),
    (
        "login with two client credentials",
        lambda ns: policy(ns, login=_login(clientSecretFile="s")),
        "login needs exactly one client credential",
    ),
    (
        "private_key_jwt with a secret",
        lambda ns: policy(ns, login=_login(clientAuthentication="private_key_jwt")),
        "clientAuthentication private_key_jwt goes with privateKeyFile",
    ),
    (
        "login without openid",
        lambda ns: policy(ns, login=_login(scopes=["email"])),
        "login.scopes must include openid",
    ),
    (
        "login paths that collide",
        lambda ns: policy(ns, login=_login(logoutPath="/oauth2/callback")),
        "login.callbackPath, logoutPath and loginPath must differ",
    ),
    (
        "a session with two key rings",
        lambda ns: policy(
            ns, login=_login(session={"keysRef": {"name": "k", "key": "k"}, "keysFile": "k"})
        ),
        "login.session needs exactly one of keysFile, keysRef",
    ),
    (
        "an idle timeout past the absolute one",
        lambda ns: policy(
            ns,
            login=_login(
                session={
                    "keysRef": {"name": "k", "key": "k"},
                    "idleTimeoutSeconds": 7200,
                    "absoluteTimeoutSeconds": 3600,
                }
            ),
        ),
        "login.session.idleTimeoutSeconds must not exceed absoluteTimeoutSeconds",
    ),
    (
        "a host grant with a port",
        lambda ns: {
            "apiVersion": schema.API_VERSION,
            "kind": "HostGrant",
            "metadata": {"name": f"bad-{ns}"},
            "spec": {"hosts": ["shop.test:443"], "namespaces": [ns]},
        },
        "spec.hosts[0]: Invalid value",
    ),
    (
        "introspection over plain http",
        lambda ns: introspecting(ns, endpoint="http://idp.test/introspect"),
        "introspection.endpoint must use https",
    ),
    (
        "client secret method without a secret",
        lambda ns: introspecting(ns, clientAuth={"method": "client_secret_basic", "clientId": "a"}),
        "client_secret_basic and client_secret_post need exactly one of",
    ),
    (
        "private_key_jwt without a key",
        lambda ns: introspecting(ns, clientAuth={"method": "private_key_jwt", "clientId": "a"}),
        "private_key_jwt needs exactly one of privateKeyFile, privateKeyRef",
    ),
    (
        "a private key with a secret method",
        lambda ns: introspecting(
            ns, clientAuth={**SECRET_AUTH, "privateKeyRef": {"name": "k", "key": "pem"}}
        ),
        "a client secret goes with client_secret_basic or client_secret_post",
    ),
    (
        "method none with a client id",
        lambda ns: introspecting(ns, clientAuth={"method": "none", "clientId": "a"}),
        "method none sends no client credentials",
    ),
    (
        "secret method without a client id",
        lambda ns: introspecting(
            ns,
            clientAuth={
                "method": "client_secret_post",
                "clientSecretRef": {"name": "s", "key": "k"},
            },
        ),
        "clientId is required unless method is none",
    ),
    (
        "assertion fields on a secret method",
        lambda ns: introspecting(ns, clientAuth={**SECRET_AUTH, "keyId": "k1"}),
        "signingAlgorithm, keyId and assertionAudience apply to private_key_jwt only",
    ),
    (
        "plain-http introspection on a namespaced issuer",
        lambda ns: introspecting(ns, endpoint="http://idp.test/i", allowInsecureHttp=True),
        "calls its introspection endpoint over https only",
    ),
    (
        "an introspection CA file on a namespaced issuer",
        lambda ns: introspecting(ns, caFile="/etc/hostname"),
        "introspection.caFile reads the authorizer's filesystem",
    ),
    (
        "revocation entry naming nothing",
        lambda ns: revocation(ns, {"issuedBefore": "2026-01-01T00:00:00Z"}),
        "an entry names a jti, a subject or an issuer",
    ),
    (
        "revocation entry without a time",
        lambda ns: revocation(ns, {"subject": "alice"}),
        "an entry needs issuedBefore",
    ),
    (
        "expiresAt on a subject entry",
        lambda ns: revocation(
            ns,
            {
                "subject": "a",
                "issuedBefore": "2026-01-01T00:00:00Z",
                "expiresAt": "2026-01-02T00:00:00Z",
            },
        ),
        "expiresAt applies to jti entries only",
    ),
    (
        "revocation time that is no time",
        lambda ns: revocation(ns, {"subject": "a", "issuedBefore": "yesterday"}),
        "issuedBefore",
    ),
]

SECRET_AUTH = {
    "method": "client_secret_basic",
    "clientId": "authz",
    "clientSecretRef": {"name": "s", "key": "k"},
}


def introspecting(ns: str, **block: Any) -> dict[str, Any]:
    """An issuer of opaque tokens only (no key source) with this introspection block."""
    spec = {"endpoint": "https://idp.test/introspect", "clientAuth": SECRET_AUTH, **block}
    return _drop(issuer(ns, introspection=spec), "jwks")


def revocation(ns: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": schema.API_VERSION,
        "kind": "TokenRevocation",
        "metadata": {"name": f"rev-{ns}"},
        "spec": {"entries": list(entries)},
    }


def _login(**overrides: Any) -> dict[str, Any]:
    """A valid login block reading its secrets from Secrets (cluster mode)."""
    return {
        "issuer": {"name": "idp"},
        "clientId": "web",
        "clientSecretRef": {"name": "web-oidc", "key": "client-secret"},
        "session": {"keysRef": {"name": "web-oidc", "key": "session-keys"}},
        **overrides,
    }


def _drop(doc: dict[str, Any], field: str) -> dict[str, Any]:
    del doc["spec"][field]
    return doc


@pytest.mark.parametrize(("case", "make", "message"), CEL_CASES, ids=[c[0] for c in CEL_CASES])
def test_api_server_rejects_invalid_objects(
    crds: ControlPlane,
    namespace: str,
    case: str,
    make: Callable[[str], dict[str, Any]],
    message: str,
) -> None:
    with pytest.raises(KubeError) as info:
        crds.apply([make(namespace)])
    assert info.value.status == 422, case
    assert message in json.dumps(info.value.body), info.value.body


def test_claim_values_are_any_json_value_in_the_api_server(
    crds: ControlPlane, namespace: str
) -> None:
    """`equals`, `in` and `contains` hold any JSON value: the CRD field has no type and
    x-kubernetes-preserve-unknown-fields, and the API server keeps each value's type."""
    values: list[Any] = [True, 1, 2.5, "true", ["a", 1], {"k": ["v"]}]
    conditions = [{"path": "c", "equals": v} for v in values]
    conditions += [{"path": "c", "in": values}, {"path": "c", "contains": {"id": 7}}]
    conditions += [{"path": "acr", "atLeast": 2, "atMost": 3.5}, {"path": "t", "maxAgeSeconds": 0}]
    doc = policy(namespace, rules=[{"name": "typed", "claims": conditions}])
    stored = crds.apply([doc])[0]["spec"]["rules"][0]["claims"]
    assert stored == conditions
    required = [{"path": "token_use", "equals": "access"}, {"path": "typ", "in": ["Bearer", 1]}]
    stored = crds.apply([issuer(namespace, requiredClaims=required)])[0]["spec"]
    assert stored["requiredClaims"] == required


def test_every_cel_rule_has_a_rejection_case() -> None:
    messages = {m for _, _, m in CEL_CASES}
    for _, _, cel, rule_message in schema.RULES:
        if cel:  # a rule without CEL is authz's own: see the test below
            assert any(m in rule_message for m in messages), rule_message


def test_what_cel_cannot_see_authz_reports(
    crds: ControlPlane, namespace: str, authz_server: AuthzFactory, tmp_path: Path
) -> None:
    """A claim condition with two operators that hold JSON values passes the API server (its
    CEL cannot see untyped fields) and is reported not Ready by authz, which keeps serving
    the last good version."""
    check = Checker(start(authz_server, crds, namespace, tmp_path))
    crds.apply([issuer(namespace), policy(namespace)])
    check.wait_for(200, token())
    both = [{"path": "tenant", "equals": "acme", "in": ["acme"]}]
    bad = policy(namespace, rules=[{"name": "r", "claims": both}])
    crds.apply([bad])  # accepted by the API server
    eventually(lambda: conditions(crds, bad).get("Ready", {}).get("reason") == "ServingLastGood")
    assert schema.CLAIM_OPERATOR_MESSAGE in conditions(crds, bad)["Ready"]["message"]
    assert check.status(token()) == 200


def test_dpop_blocks_come_through_the_api_server(
    crds: ControlPlane, namespace: str, authz_server: AuthzFactory, tmp_path: Path
) -> None:
    """The dpop, clientCertificate and internalToken blocks and requireDPoP pass the CRDs'
    schema and CEL rules, and a replica in cluster mode decides DPoP requests with them."""
    server = start(authz_server, crds, namespace, tmp_path)
    dpop = policy(
        namespace,
        dpop={"algorithms": ["ES256"], "proofMaxAgeSeconds": 30, "requireNonce": False},
        clientCertificate={"trustForwardedClientCert": False},
        rules=[{"name": "pay", "requireDPoP": True}],
    )
    crds.apply([issuer(namespace, requireDPoP=False), dpop])
    checker = Checker(server)
    checker.wait_for(401, token(), within=5)  # a bearer token: dpop_required
    client = DPoPClient()
    bound = token(cnf={"jkt": client.jkt})
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.host, http.path, http.scheme = "GET", "api.test", "/x", "https"
    http.headers.update(client.headers(bound, htu="https://api.test/x", iat=time.time()))
    assert checker.stub.Check(request, timeout=5).status.code == 0
    assert checker.stub.Check(request, timeout=5).status.message == "dpop_proof_replayed"
    eventually(lambda: conditions(crds, dpop).get("Ready", {}).get("status") == "True")


def test_one_of_two_replicas_writes_status(
    crds: ControlPlane, namespace: str, authz_server: AuthzFactory, tmp_path: Path
) -> None:
    first = start(authz_server, crds, namespace, tmp_path, pod="authz-a")
    second = start(authz_server, crds, namespace, tmp_path, pod="authz-b")
    broken = policy(
        namespace, "broken", host="b.test", rules=[{"claims": [{"path": "e", "regex": "(x"}]}]
    )
    crds.apply([issuer(namespace), policy(namespace), broken])
    for server in (first, second):
        Checker(server).wait_for(200, token(), within=5)
    eventually(lambda: conditions(crds, broken).get("Ready", {}).get("reason") == "Invalid")
    _, lease = crds.request(
        "GET", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/authz-status"
    )
    leader = lease["spec"]["holderIdentity"]
    assert leader in ("authz-a", "authz-b")
    time.sleep(1.0)  # give a wrongly-acting follower the chance to write
    for doc in (issuer(namespace), policy(namespace), broken):
        _, obj = crds.request("GET", crds.resource_path(doc))
        writers = {
            m["manager"]
            for m in obj["metadata"]["managedFields"]
            if m.get("subresource") == "status"
        }
        assert writers == {leader}, obj["metadata"]["managedFields"]
    _, events = crds.request("GET", f"/api/v1/namespaces/{namespace}/events")
    reporters = {
        e.get("reportingInstance")
        for e in events["items"]
        if e["involvedObject"]["name"] == "broken"
    }
    assert reporters == {leader}


def _etcd_churn_and_compact(cp: ControlPlane) -> None:
    """Write past every resourceVersion authz holds, then compact: its watch resumes into 410."""

    def post(path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(  # noqa: S310
            cp.etcd_url + path, data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return json.loads(response.read())

    key = base64.b64encode(b"/authz-test/churn").decode()
    for n in range(5):
        reply = post(
            "/v3/kv/put", {"key": key, "value": base64.b64encode(str(n).encode()).decode()}
        )
    post("/v3/kv/compaction", {"revision": int(reply["header"]["revision"]), "physical": True})


def test_api_server_restart_keeps_serving(
    crds: ControlPlane, namespace: str, authz_server: AuthzFactory, tmp_path: Path
) -> None:
    server = start(authz_server, crds, namespace, tmp_path)
    check = Checker(server)
    crds.apply([issuer(namespace), policy(namespace)])
    check.wait_for(200, token())
    crds.stop_apiserver()
    try:
        for _ in range(20):  # the API server is gone: the last snapshot keeps serving
            assert check.status(token()) == 200
            assert check.status() == 401
            time.sleep(0.05)
        assert http_request(server.http_url, "GET", "/readyz").status == 200
    finally:
        crds.start_apiserver()
    crds.apply([policy(namespace, rules=[{"name": "r", "requireScopes": {"allOf": ["admin"]}}])])
    check.wait_for(403, token(), within=45)  # reconnect backoff is capped at 30 s


def test_expired_watch_is_gone_and_the_source_relists(crds: ControlPlane, namespace: str) -> None:
    """A watch resumed from a compacted resourceVersion gets 410: the source relists."""
    store = PolicyStore()
    with crds.api_client() as api:
        source = KubeSource(api, store, namespaces=[namespace])
        target = next(t for t in source.targets if t.kind == "AuthzPolicy")
        stale = source._list(target)
        crds.apply([issuer(namespace), policy(namespace)])  # move past it
        crds.stop_apiserver()
        try:
            _etcd_churn_and_compact(crds)
        finally:
            crds.start_apiserver()
        with pytest.raises(_Gone):
            source._watch(target, stale)
        source._list(target)  # what _run does on _Gone
        assert f"AuthzPolicy/{namespace}/api" in source.objects


def test_file_sources_are_refused_on_cluster_objects(
    crds: ControlPlane, namespace: str, authz_server: AuthzFactory, tmp_path: Path
) -> None:
    """A tenant must not make the authorizer trust key material from its own filesystem."""
    start(authz_server, crds, namespace, tmp_path)
    sneaky = _drop(
        issuer(namespace, "sneaky", hmacSecretFile="/etc/hostname", algorithms=["HS256"]), "jwks"
    )
    crds.apply([sneaky])
    eventually(lambda: conditions(crds, sneaky).get("Ready", {}).get("reason") == "Invalid")
    assert "not allowed on cluster objects" in conditions(crds, sneaky)["Accepted"]["message"]


def test_hmac_secret_from_a_kubernetes_secret(
    crds: ControlPlane, namespace: str, authz_server: AuthzFactory, tmp_path: Path
) -> None:
    secret = b"s" * 32
    crds.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "hs", "namespace": namespace},
                "data": {"key": base64.b64encode(secret + b"\n").decode()},
            }
        ]
    )
    hs_issuer = _drop(
        issuer(namespace, hmacSecretRef={"name": "hs", "key": "key"}, algorithms=["HS256"]), "jwks"
    )
    check = Checker(start(authz_server, crds, namespace, tmp_path))
    crds.apply([hs_issuer, policy(namespace)])
    jwk = {"kty": "oct", "k": base64.urlsafe_b64encode(secret).rstrip(b"=").decode()}
    now = int(time.time())
    claims = {"iss": ISS, "sub": "u", "aud": "api", "iat": now, "exp": now + 600, "scope": "read"}
    check.wait_for(200, mint_token(jwk, claims, alg="HS256"))
    assert check.status(token()) == 401  # an ES256 token is not acceptable to an HS-only issuer
    missing = _drop(
        issuer(namespace, "gone", hmacSecretRef={"name": "nope", "key": "k"}, algorithms=["HS256"]),
        "jwks",
    )
    foreign = _drop(
        issuer(
            namespace,
            "foreign",
            hmacSecretRef={"name": "hs", "key": "key", "namespace": "kube-system"},
            algorithms=["HS256"],
        ),
        "jwks",
    )
    crds.apply([missing, foreign])
    eventually(
        lambda: (
            "cannot read Secret" in conditions(crds, missing).get("Accepted", {}).get("message", "")
        )
    )
    eventually(
        lambda: (
            "ClusterJWTIssuer only"
            in conditions(crds, foreign).get("Accepted", {}).get("message", "")
        )
    )


def test_login_secrets_come_from_kubernetes_secrets(
    crds: ControlPlane, namespace: str, authz_server: AuthzFactory, tmp_path: Path
) -> None:
    """A namespace's login block reads its client secret and key ring from Secrets in its
    own namespace: refused while they are missing, accepted once they exist, serving
    browser sign-in (here the retrying page: its provider is not reachable from the test)."""
    web_issuer = _drop(issuer(namespace, "idp", jwksUri=f"{ISS}/jwks"), "jwks")
    web = policy(namespace, "web", host="web.test", login=_login())
    check = Checker(start(authz_server, crds, namespace, tmp_path))
    crds.apply([web_issuer, web])
    eventually(
        lambda: "cannot read Secret" in conditions(crds, web).get("Accepted", {}).get("message", "")
    )
    crds.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "web-oidc", "namespace": namespace},
                "data": {
                    "client-secret": base64.b64encode(b"s3cret\n").decode(),
                    "session-keys": base64.b64encode(base64.b64encode(b"k" * 32) + b"\n").decode(),
                },
            }
        ]
    )
    # Secrets are read on every rebuild: touching the policy picks the new one up at once.
    crds.apply([policy(namespace, "web", host="web.test", login=_login(clientId="web-app"))])
    eventually(lambda: conditions(crds, web).get("Accepted", {}).get("status") == "True", within=20)
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.host, http.path = "GET", "web.test", "/page"
    http.headers.update({"sec-fetch-mode": "navigate", "accept": "text/html"})
    response = check.stub.Check(request, timeout=5)
    # Discovery at https://idp.cluster.test cannot succeed here: the answer is the retrying
    # page, not a redirect anywhere, and the session key ring was read (no compile error).
    assert response.denied_response.status.code == 503
    assert "provider did not answer" in response.denied_response.body
