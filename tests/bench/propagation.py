"""Policy propagation in cluster mode: from `kubectl apply` returning to a changed decision.

Real etcd + kube-apiserver (tests/support/kube.py), `authz serve --kubernetes` as a
subprocess, and a gRPC client that polls Check until the decision flips. Each round
toggles a required scope on one AuthzPolicy, so every round is one watch event, one
debounced rebuild and one snapshot swap. Prints p50/p99/max and the server's own
`authz_policy_propagation_seconds` (watch event observed -> snapshot serving).

    python -m tests.bench.propagation [ROUNDS]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz.devtools import generate_key, mint_token
from authz.policy import crd, schema
from tests.support.kube import ControlPlane
from tests.support.procs import Process, free_port, http_request, wait_for_http

ISS = "https://propagation.bench"
NS = "bench"


def _docs(jwk: dict[str, Any], scope: str) -> list[dict[str, Any]]:
    meta = {"namespace": NS}
    return [
        {
            "apiVersion": schema.API_VERSION,
            "kind": "JWTIssuer",
            "metadata": {"name": "idp", **meta},
            "spec": {"issuer": ISS, "jwks": {"keys": [jwk]}, "audiences": ["api"]},
        },
        {
            "apiVersion": schema.API_VERSION,
            "kind": "AuthzPolicy",
            "metadata": {"name": "api", **meta},
            "spec": {
                "targets": {"hosts": ["*"]},
                "issuers": [{"name": "idp"}],
                "rules": [{"name": "r", "requireScopes": {"allOf": [scope]}}],
            },
        },
    ]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(rounds: int = 50) -> dict[str, float]:
    private, public = generate_key("ES256", "p1")
    now = int(time.time())
    token = mint_token(
        private, {"iss": ISS, "sub": "b", "aud": "api", "iat": now, "exp": now + 3600, "scope": "a"}
    )
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.host, http.path = "GET", "api", "/"
    http.headers["authorization"] = f"Bearer {token}"
    with ControlPlane() as cp, tempfile.TemporaryDirectory() as empty:
        cp.apply([crd.crd(kind) for kind in schema.KINDS])
        cp.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}])
        cp.apply(_docs(public, "a"))
        grpc_port, http_port = free_port(), free_port()
        argv = [
            sys.executable, "-m", "authz", "serve", "--kubernetes",
            "--kubeconfig", str(cp.kubeconfig_path), "--watch-namespaces", NS,
            "--leader-election-namespace", NS, "--policy-dir", empty,
            "--grpc-addr", f"127.0.0.1:{grpc_port}", "--http-addr", f"127.0.0.1:{http_port}",
            "--http-check-addr", "off", "--log-level", "warning",
        ]  # fmt: skip
        with Process(argv, name="authz") as proc:
            wait_for_http(f"http://127.0.0.1:{http_port}/readyz", 30, proc=proc)
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                stub = external_auth_pb2_grpc.AuthorizationStub(channel)
                samples = []
                for n in range(rounds):
                    allowed_next = n % 2 == 1  # toggle: require "b" (deny) / "a" (allow)
                    cp.apply(_docs(public, "a" if allowed_next else "b"))
                    applied = time.monotonic()
                    while (stub.Check(request, timeout=5).status.code == 0) != allowed_next:
                        if time.monotonic() - applied > 10:
                            raise TimeoutError(f"round {n}: decision did not change within 10 s")
                        time.sleep(0.002)
                    samples.append(time.monotonic() - applied)
            metrics = http_request(f"http://127.0.0.1:{http_port}", "GET", "/metrics").body.decode()
    server_sum = server_count = 0.0
    for line in metrics.splitlines():
        if line.startswith("authz_policy_propagation_seconds_sum"):
            server_sum = float(line.split()[-1])
        elif line.startswith("authz_policy_propagation_seconds_count"):
            server_count = float(line.split()[-1])
    return {
        "rounds": rounds,
        "p50_ms": statistics.median(samples) * 1000,
        "p99_ms": _percentile(samples, 0.99) * 1000,
        "max_ms": max(samples) * 1000,
        "server_mean_ms": server_sum / server_count * 1000 if server_count else float("nan"),
    }


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    result = run(rounds)
    print(
        "cluster-mode policy propagation (apply returned -> decision changed), real kube-apiserver"
    )
    print(f"{'rounds':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'server mean ms':>15}  target")
    print(
        f"{result['rounds']:>8} {result['p50_ms']:>8.1f} {result['p99_ms']:>8.1f} "
        f"{result['max_ms']:>8.1f} {result['server_mean_ms']:>15.1f}  p99 < 1000 ms: "
        f"{'met' if result['p99_ms'] < 1000 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
