"""`authz serve --workers N`: pinned worker processes behind one supervisor."""

from __future__ import annotations

import errno
import http.client
import os
import signal
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz.devtools import generate_key
from tests.e2e.conftest import AuthzFactory, AuthzServer
from tests.e2e.test_envoy_flows import _write_policies
from tests.support.http_checks import Connection as HttpConnection
from tests.support.pki import CA, pem_cert, write_pair
from tests.support.procs import http_request


@pytest.fixture
def server(tmp_path: Path, authz_server: AuthzFactory) -> AuthzServer:
    _write_policies(tmp_path, generate_key("ES256", "w1")[1])
    return authz_server(tmp_path, extra_args=["--workers", "2"])


def _healthz() -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.host, http.path = "GET", "api.example", "/healthz"
    return request


def _check(addr: str) -> Any:
    with grpc.insecure_channel(addr) as channel:
        return external_auth_pb2_grpc.AuthorizationStub(channel).Check(_healthz(), timeout=5)


def _worker_pids(supervisor: int) -> list[int]:
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return sorted(int(pid) for pid in children)


def test_workers_serve_on_the_shared_and_their_own_ports(server: AuthzServer) -> None:
    host, _, port = server.grpc_addr.rpartition(":")
    for addr in (server.grpc_addr, f"{host}:{int(port) + 10}", f"{host}:{int(port) + 11}"):
        assert _check(addr).status.code == 0, addr
    metrics = server.metrics()
    assert 'worker="0"' in metrics and 'worker="1"' in metrics
    assert "authz_worker_restarts_total 0.0" in metrics


def test_workers_are_pinned_to_distinct_cpus(server: AuthzServer) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    cpus = [os.sched_getaffinity(pid) for pid in _worker_pids(server.process.pid)]
    assert all(len(c) == 1 for c in cpus) and cpus[0] != cpus[1], cpus


def test_a_killed_worker_is_restarted_and_traffic_continues(server: AuthzServer) -> None:
    before = _worker_pids(server.process.pid)
    os.kill(before[0], signal.SIGKILL)
    served = reset = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            assert _check(server.grpc_addr).status.code == 0  # the other worker answers
            served += 1
        except grpc.RpcError as exc:
            # a connection the kernel had already queued on the killed worker's socket
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
            reset += 1
            assert reset <= 3, "more than the killed worker's queued connections failed"
            continue
        after = _worker_pids(server.process.pid)
        if (
            len(after) == 2
            and before[0] not in after
            and http_request(server.http_url, "GET", "/readyz").status == 200
        ):
            break
        time.sleep(0.1)
    else:
        pytest.fail("worker was not restarted")
    assert "authz_worker_restarts_total 1.0" in server.metrics()
    assert served > 0


def test_sigterm_drains_every_worker(server: AuthzServer) -> None:
    workers = _worker_pids(server.process.pid)
    assert server.process.stop(grace=20) == 0
    for pid in workers:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )


def test_a_process_that_co_binds_the_shared_port_makes_the_pod_unready(
    server: AuthzServer,
) -> None:
    """Issue 11, item 15: another process of the same user can join the workers'
    SO_REUSEPORT group and answer ALLOW for its share of connections. grpcio cannot serve
    one inherited socket, so that cannot be prevented; the supervisor sees it within
    seconds, says so and fails /readyz, so the pod leaves the Service's endpoints."""
    host, _, port = server.grpc_addr.rpartition(":")
    ready = lambda: http_request(server.http_url, "GET", "/readyz").status  # noqa: E731
    assert ready() == 200
    rogue = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    rogue.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        rogue.bind((host, int(port)))
        rogue.listen(8)
        deadline = time.monotonic() + 15
        while ready() != 503:
            assert time.monotonic() < deadline, "the foreign listener was not noticed"
            time.sleep(0.2)
        assert "authz_foreign_listeners 1.0" in server.metrics()
    finally:
        rogue.close()
    deadline = time.monotonic() + 15
    while ready() != 200:
        assert time.monotonic() < deadline, "not ready again after the listener left"
        time.sleep(0.2)


# -- HTTP checks: one socket the supervisor binds and accepts on, connections handed out ------


def _http_check(server: AuthzServer) -> int:
    assert server.http_check_addr is not None
    url = f"http://{server.http_check_addr}"
    return http_request(url, "GET", "/check/envoy/healthz", {"Host": "api.example"}).status


def _decisions_by_worker(
    server: AuthzServer, metric: str = "authz_decisions_total"
) -> dict[str, float]:
    counts: dict[str, float] = {}
    for line in server.metrics().splitlines():
        if line.startswith(metric + "{"):
            worker = line.split('worker="', 1)[1].split('"', 1)[0]
            counts[worker] = counts.get(worker, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def test_http_checks_share_one_socket_across_workers(server: AuthzServer) -> None:
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: _http_check(server), range(80)))
    assert statuses == [200] * 80
    counts = _decisions_by_worker(server)
    assert set(counts) == {"0", "1"} and all(counts.values()), counts


def test_a_proxys_connections_are_shared_evenly(server: AuthzServer) -> None:
    """A proxy opens its connections at once and keeps them: on one shared socket, one
    worker would take most or all of them (and of the load). The supervisor hands them out
    in turn, so 8 kept-alive connections are 4 and 4."""
    assert server.http_check_addr is not None
    port = int(server.http_check_addr.rpartition(":")[2])
    handed = "authz_worker_http_connections_total"
    before, handed_before = _decisions_by_worker(server), _decisions_by_worker(server, handed)
    connections = [HttpConnection(port) for _ in range(8)]
    try:
        for _ in range(5):
            for connection in connections:
                answer = connection.request("GET", "/check/envoy/healthz", {"Host": "api.example"})
                assert answer.status == 200 and answer.keep_alive
    finally:
        for connection in connections:
            connection.close()
    after, handed_after = _decisions_by_worker(server), _decisions_by_worker(server, handed)
    assert {w: after[w] - before.get(w, 0.0) for w in after} == {"0": 20.0, "1": 20.0}
    assert {w: v - handed_before.get(w, 0.0) for w, v in handed_after.items()} == {
        "0": 4.0,
        "1": 4.0,
    }


def test_no_other_process_can_co_bind_the_http_check_port(server: AuthzServer) -> None:
    """Issue 11, item 15: with SO_REUSEPORT another process of the same user could bind the
    check port too and answer ALLOW for its share of connections."""
    assert server.http_check_addr is not None
    host, _, port = server.http_check_addr.rpartition(":")
    with socket.socket() as intruder:
        intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        with pytest.raises(OSError) as refused:
            intruder.bind((host, int(port)))
        assert refused.value.errno == errno.EADDRINUSE


def test_new_connections_are_answered_through_the_shutdown_delay(
    tmp_path: Path, authz_server: AuthzFactory
) -> None:
    """Load balancers and proxies take a moment to see /readyz fail: in that moment new
    connections are handed to the draining workers and answered."""
    _write_policies(tmp_path, generate_key("ES256", "w1")[1])
    server = authz_server(tmp_path, extra_args=["--workers", "2", "--shutdown-delay", "1.5"])
    os.kill(server.process.pid, signal.SIGTERM)
    time.sleep(0.5)
    assert http_request(server.http_url, "GET", "/readyz").status == 503
    assert [_http_check(server) for _ in range(6)] == [200] * 6  # each on a new connection
    assert server.process.stop(grace=20) == 0


def test_http_checks_continue_when_a_worker_dies(server: AuthzServer) -> None:
    os.kill(_worker_pids(server.process.pid)[1], signal.SIGKILL)
    statuses = [_http_check(server) for _ in range(20)]
    assert statuses == [200] * 20  # the supervisor hands every connection to the survivor


def test_workers_serve_tls_on_every_port(tmp_path: Path, authz_server: AuthzFactory) -> None:
    """With --workers each worker serves TLS on the shared gRPC port and its own; the
    supervisor accepts HTTP check connections and a worker adopts them, TLS handshake and
    all, with the server's certificate."""
    ca = CA.create("authz-serving")
    key, cert = ca.serving("authz", dns=["authz.authz.svc"], ips=["127.0.0.1"])
    write_pair(key, cert, tmp_path / "tls.crt", tmp_path / "tls.key")
    policies = tmp_path / "policies"
    policies.mkdir()
    _write_policies(policies, generate_key("ES256", "w1")[1])
    tls = [
        "--tls-cert-file",
        str(tmp_path / "tls.crt"),
        "--tls-key-file",
        str(tmp_path / "tls.key"),
    ]
    server = authz_server(policies, extra_args=["--workers", "2", *tls])
    host, _, grpc_port = server.grpc_addr.rpartition(":")
    trust = grpc.ssl_channel_credentials(root_certificates=pem_cert(ca.cert))
    for offset in (0, 10, 11):  # the shared port, then each worker's own
        with grpc.secure_channel(f"{host}:{int(grpc_port) + offset}", trust) as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            assert stub.Check(_healthz(), timeout=5).status.code == 0, offset
    assert server.http_check_addr is not None
    host, _, port = server.http_check_addr.rpartition(":")
    context = ssl.create_default_context(cadata=pem_cert(ca.cert).decode())
    statuses = []
    for _ in range(6):  # handed to both workers in turn
        connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
        connection.request("GET", "/check/envoy/healthz", headers={"Host": "api.example"})
        statuses.append(connection.getresponse().status)
        connection.close()
    assert statuses == [200] * 6
    assert set(_decisions_by_worker(server)) == {"0", "1"}
    with socket.create_connection((host, int(port)), timeout=10) as plain:  # no TLS: refused
        plain.sendall(b"GET /check/envoy/healthz HTTP/1.1\r\nHost: api.example\r\n\r\n")
        assert not plain.recv(4096).startswith(b"HTTP/1.1 200")
