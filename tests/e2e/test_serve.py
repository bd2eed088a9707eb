"""`authz serve` as a process: ops endpoints, gRPC health and reflection, audit logs, drain."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from authz.devtools import generate_key, mint_token
from tests.e2e.conftest import AuthzFactory, AuthzServer
from tests.e2e.test_envoy_flows import ISS, _write_policies
from tests.support.procs import http_request


@pytest.fixture(scope="module")
def keys() -> tuple[dict[str, Any], dict[str, Any]]:
    return generate_key("EdDSA", "serve-1")


@pytest.fixture
def server(tmp_path: Path, authz_server: AuthzFactory, keys: Any) -> AuthzServer:
    _write_policies(tmp_path, keys[1])
    return authz_server(tmp_path)


def _request(value: str | None = None, path: str = "/orders/1") -> Any:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.host, http.path = "GET", "api.example", path
    if value:
        http.headers["authorization"] = f"Bearer {value}"
    return request


def _token(keys: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": ISS,
        "sub": "svc",
        "aud": "orders-api",
        "iat": now,
        "exp": now + 300,
        "scope": "orders.read",
        "jti": "j-1",
    }
    return mint_token(keys[0], claims)


def _stub(server: AuthzServer) -> tuple[grpc.Channel, Any]:
    channel = grpc.insecure_channel(server.grpc_addr)
    return channel, external_auth_pb2_grpc.AuthorizationStub(channel)


def test_ops_endpoints_and_metrics(server: AuthzServer, keys: Any) -> None:
    assert http_request(server.http_url, "GET", "/healthz").status == 200
    assert http_request(server.http_url, "GET", "/readyz").status == 200
    channel, stub = _stub(server)
    with channel:
        assert stub.Check(_request(_token(keys)), timeout=5).status.code == 0
        assert stub.Check(_request(), timeout=5).denied_response.status.code == 401
    metrics = server.metrics()
    assert (
        'authz_decisions_total{decision="allow",policy="AuthzPolicy/default/orders",reason="allowed"} 1.0'
        in metrics
    )
    assert (
        'authz_decisions_total{decision="deny",policy="AuthzPolicy/default/orders",reason="token_missing"} 1.0'
        in metrics
    )
    assert "authz_snapshot_version 1.0" in metrics
    assert 'authz_issuer_keys{issuer="JWTIssuer/default/demo"} 1.0' in metrics
    assert "authz_check_duration_seconds_count 2.0" in metrics


def test_grpc_health_and_reflection(server: AuthzServer) -> None:
    with grpc.insecure_channel(server.grpc_addr) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "envoy.service.auth.v3.Authorization"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        [reply] = list(reflection.ServerReflectionInfo(iter([request]), timeout=5))
        names = {s.name for s in reply.list_services_response.service}
        assert "envoy.service.auth.v3.Authorization" in names


def test_audit_line_per_decision_never_the_token(server: AuthzServer, keys: Any) -> None:
    value = _token(keys)
    channel, stub = _stub(server)
    with channel:
        stub.Check(_request(value), timeout=5)
        stub.Check(_request(value[:-6] + "AAAAAA"), timeout=5)
    time.sleep(0.2)
    log = server.process.log_path.read_text()
    assert value not in log and value.split(".")[2][:20] not in log
    lines = [json.loads(line) for line in log.splitlines() if '"decision"' in line]
    allowed = next(line for line in lines if line["decision"] == "allow")
    assert allowed["iss"] == ISS and allowed["sub"] == "svc" and allowed["jti"] == "j-1"
    assert (
        allowed["kid"] == "serve-1"
        and allowed["rule"] == "read-orders"
        and allowed["status"] == 200
    )
    denied = next(line for line in lines if line["decision"] == "deny")
    assert denied["reason"] == "signature_invalid" and denied["status"] == 401


def test_garbage_grpc_payload_does_not_hurt_the_server(server: AuthzServer, keys: Any) -> None:
    with grpc.insecure_channel(server.grpc_addr) as channel:
        raw = channel.unary_unary("/envoy.service.auth.v3.Authorization/Check")
        for payload in (b"\xff\xff\xff", b"\x0a\x05hello", bytes(range(256))):
            with pytest.raises(grpc.RpcError) as info:
                raw(payload, timeout=5)
            assert info.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        assert stub.Check(_request(_token(keys)), timeout=5).status.code == 0
        empty = stub.Check(external_auth_pb2.CheckRequest(), timeout=5)
        assert empty.denied_response.status.code == 400


def test_sigterm_drains_without_losing_requests(
    tmp_path: Path, authz_server: AuthzFactory, keys: Any
) -> None:
    _write_policies(tmp_path, keys[1])
    server = authz_server(tmp_path, extra_args=["--shutdown-delay", "1.0"])
    value = _token(keys)
    results: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with grpc.insecure_channel(server.grpc_addr) as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            while not stop.is_set():
                try:
                    code = stub.Check(_request(value), timeout=5).status.code
                    results.append("ok" if code == 0 else f"code-{code}")
                except grpc.RpcError as exc:
                    results.append(exc.code().name)
                    return

    worker = threading.Thread(target=load)
    worker.start()
    time.sleep(0.3)
    os.kill(server.process.pid, signal.SIGTERM)
    time.sleep(0.4)  # inside the shutdown delay: not ready, still answering
    assert http_request(server.http_url, "GET", "/readyz").status == 503
    served_while_draining = len(results)
    time.sleep(0.3)
    assert len(results) > served_while_draining
    worker.join(timeout=10)
    stop.set()
    assert server.process.stop(grace=15) == 0  # a repeated SIGTERM is harmless
    assert set(results[:-1]) == {"ok"}, results[-5:]
    # only the request sent after the listener closed is refused (UNAVAILABLE or CANCELLED)
    assert results[-1] in ("ok", "UNAVAILABLE", "CANCELLED")
