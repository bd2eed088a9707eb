"""Revocation and introspection in cluster mode, against a real etcd + kube-apiserver.

Two `authz serve --kubernetes` replicas watch the CRDs. A TokenRevocation applied with
kubectl's server-side apply must change the decision of both replicas within a second,
and deleting it must give the token back as fast: measured over several rounds and
printed (p50 / max), like tests/bench/propagation.py measures policy changes. The leader
writes the list's status (how many entries are active). An introspecting issuer reads its
client secret from a real Secret.
"""

from __future__ import annotations

import base64
import statistics
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from authz.policy import schema
from tests.e2e.conftest import AuthzFactory, AuthzServer
from tests.e2e.test_controller import Checker, crds, issuer, namespace, policy, start, token  # noqa: F401  (fixtures: CRDs, a granted namespace)
from tests.support.introspection_server import ClientCheck, IntrospectionServer
from tests.support.kube import ControlPlane
from tests.support.kube_fixtures import control_plane, control_plane_users  # noqa: F401

ISS = "https://idp.cluster.test"  # the issuer test_controller's helpers declare
ROUNDS = 8


def revocation(name: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": schema.API_VERSION,
        "kind": "TokenRevocation",
        "metadata": {"name": name},
        "spec": {"maxTokenLifetimeSeconds": 3600, "entries": list(entries)},
    }


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def wait_all(checkers: list[Checker], expected: int, value: str, within: float) -> float:
    """Poll every replica until each answers `expected`; the time the last one did."""
    started = time.monotonic()
    pending = set(range(len(checkers)))
    while pending:
        for i in list(pending):
            if checkers[i].status(value) == expected:
                pending.discard(i)
        elapsed = time.monotonic() - started
        assert not pending or elapsed < within, f"replicas {pending} still not {expected}"
        if pending:
            time.sleep(0.005)
    return time.monotonic() - started


def test_a_revocation_reaches_both_replicas_within_a_second(
    crds: ControlPlane,  # noqa: F811
    namespace: str,  # noqa: F811
    authz_server: AuthzFactory,
    tmp_path: Path,
) -> None:
    servers = [start(authz_server, crds, namespace, tmp_path, pod=p) for p in ("authz-a", "authz-b")]  # fmt: skip
    checkers = [Checker(s) for s in servers]
    subject = f"user-{uuid.uuid4().hex[:6]}"
    now = int(time.time())
    value = token(sub=subject, iat=now, jti="j-1")
    crds.apply([issuer(namespace), policy(namespace)])
    wait_all(checkers, 200, value, within=10)
    name = f"incident-{namespace}"
    entry = {"subject": subject, "issuer": ISS, "issuedBefore": _iso(now + 1)}
    revoke, restore = [], []
    try:
        for _ in range(ROUNDS):
            crds.apply([revocation(name, entry)])
            revoke.append(wait_all(checkers, 401, value, within=5))
            crds.delete(revocation(name))
            restore.append(wait_all(checkers, 200, value, within=5))
        # The leader reports the list: one active entry.
        crds.apply([revocation(name, entry, {"jti": "old", "expiresAt": _iso(now - 7200)})])
        wait_all(checkers, 401, value, within=5)
        deadline = time.monotonic() + 30
        while True:
            _, obj = crds.request("GET", crds.resource_path(revocation(name)))
            entries = obj.get("status", {}).get("entries")
            if entries == {"active": 1, "lapsed": 1}:
                break
            assert time.monotonic() < deadline, obj.get("status")
            time.sleep(0.2)
        ready = {c["type"]: c for c in obj["status"]["conditions"]}["Ready"]
        assert ready["status"] == "True"
    finally:
        crds.delete(revocation(name))
    print(
        f"revocation propagation, 2 replicas, real kube-apiserver, {ROUNDS} rounds: "
        f"revoke p50 {statistics.median(revoke) * 1000:.0f} ms max {max(revoke) * 1000:.0f} ms; "
        f"un-revoke p50 {statistics.median(restore) * 1000:.0f} ms max {max(restore) * 1000:.0f} ms"
    )
    assert max(revoke) < 1.0 and max(restore) < 1.0
    for server in servers:
        assert "authz_policy_propagation_seconds_count" in server.metrics()


def test_introspection_client_secret_from_a_real_secret(
    crds: ControlPlane,  # noqa: F811
    namespace: str,  # noqa: F811
    authz_server: AuthzFactory,
    tmp_path: Path,
) -> None:
    with IntrospectionServer(ClientCheck("client_secret_basic", "orders-api", "from-a-secret")) as idp:  # fmt: skip
        idp.answer("opaque-1.x", {"active": True, "iss": ISS, "sub": "svc", "aud": "api", "scope": "read", "exp": int(time.time()) + 600})  # fmt: skip
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "introspection", "namespace": namespace},
            "data": {"secret": base64.b64encode(b"from-a-secret\n").decode()},
        }
        # A ClusterJWTIssuer (an admin's): a namespaced one may not call a plain-http or
        # loopback endpoint (tenancy), and the local endpoint is both.
        introspecting = {
            "apiVersion": schema.API_VERSION,
            "kind": "ClusterJWTIssuer",
            "metadata": {"name": f"opaque-{namespace}"},
            "spec": {
                "issuer": ISS,
                "audiences": ["api"],
                "introspection": {
                    "endpoint": idp.url,
                    "allowInsecureHttp": True,
                    "clientAuth": {
                        "method": "client_secret_basic",
                        "clientId": "orders-api",
                        "clientSecretRef": {
                            "name": "introspection",
                            "key": "secret",
                            "namespace": namespace,
                        },
                    },
                },
            },
        }
        uses = policy(
            namespace, issuers=[{"name": f"opaque-{namespace}", "kind": "ClusterJWTIssuer"}]
        )
        crds.apply([secret, introspecting, uses])
        server: AuthzServer = start(authz_server, crds, namespace, tmp_path)
        check = Checker(server)
        check.wait_for(200, "opaque-1.x", within=10)
        assert [r.authenticated for r in idp.requests] == [True]
        assert check.status("opaque-unknown.x") == 401
        deadline = time.monotonic() + 30
        while True:
            _, obj = crds.request("GET", crds.resource_path(introspecting))
            conditions = {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}
            if conditions.get("Ready", {}).get("status") == "True":
                break
            assert time.monotonic() < deadline, obj.get("status")
            time.sleep(0.2)
        assert "keys" not in obj["status"]  # no key source: no key state to report
        assert "from-a-secret" not in server.process.output()
        crds.delete(introspecting)


def test_replicas_refuse_concurrently_checked_tokens_without_stalls(
    crds: ControlPlane,  # noqa: F811
    namespace: str,  # noqa: F811
    authz_server: AuthzFactory,
    tmp_path: Path,
) -> None:
    """While checks hammer a replica, a revocation still lands within a second."""
    server = start(authz_server, crds, namespace, tmp_path)
    checker = Checker(server)
    now = int(time.time())
    value = token(sub="load", iat=now)
    crds.apply([issuer(namespace), policy(namespace)])
    checker.wait_for(200, value, within=10)
    stop = threading.Event()
    errors: list[int] = []

    def load() -> None:
        own = Checker(server)
        while not stop.is_set():
            status = own.status(value)
            if status not in (200, 401):
                errors.append(status)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    name = f"load-{namespace}"
    try:
        crds.apply([revocation(name, {"subject": "load", "issuedBefore": _iso(now + 1)})])
        elapsed = checker.wait_for(401, value, within=1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        crds.delete(revocation(name))
    assert errors == []
    print(f"revocation under load: {elapsed * 1000:.0f} ms")
