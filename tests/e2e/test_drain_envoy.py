"""SIGTERM under load, seen by a real Envoy: no request fails while an authz replica drains.

Envoy balances Checks over two `authz serve` processes and health-checks them with gRPC
health, as a mesh does with readiness. One gets SIGTERM: its health turns NOT_SERVING at
once, it keeps answering for `--shutdown-delay` while Envoy moves traffic to the other,
then finishes in-flight Checks and exits. The client must see no 5xx and no error.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from authz.devtools import generate_key
from tests.e2e.conftest import STARTUP_TIMEOUT, start_authz, start_upstream
from tests.e2e.test_envoy_flows import _write_policies, token
from tests.support.envoy import EnvoyProcess, envoy_bootstrap
from tests.support.procs import free_port, http_get, http_request

SERVICE = "envoy.service.auth.v3.Authorization"


def _two_authz_bootstrap(listen: int, admin: int, upstream: int, first: str, second: str) -> Any:
    bootstrap = envoy_bootstrap(
        listen_port=listen, admin_port=admin, authz_grpc=first, upstream_port=upstream
    )
    [cluster] = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "authz"]
    host, _, port = second.rpartition(":")
    endpoints = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    endpoints.append(
        {"endpoint": {"address": {"socket_address": {"address": host, "port_value": int(port)}}}}
    )
    cluster["health_checks"] = [
        {
            "timeout": "0.25s",
            "interval": "0.1s",
            "no_traffic_interval": "0.1s",
            "unhealthy_threshold": 1,
            "healthy_threshold": 1,
            "grpc_health_check": {"service_name": SERVICE},
        }
    ]
    cluster["common_lb_config"] = {"healthy_panic_threshold": {"value": 0}}
    return bootstrap


def _healthy_hosts(admin_url: str) -> int:
    _, body = http_get(f"{admin_url}/clusters")
    return sum(
        1
        for line in body.decode().splitlines()
        if line.startswith("authz::") and "::health_flags::healthy" in line
    )


@pytest.fixture(scope="module")
def keys() -> tuple[dict[str, Any], dict[str, Any]]:
    return generate_key("ES256", "drain-1")


def test_sigterm_under_load_gives_envoy_no_5xx(tmp_path: Path, keys: Any) -> None:
    _write_policies(tmp_path, keys[1])
    drain = ["--shutdown-delay", "1.5", "--shutdown-grace", "5"]
    with ExitStack() as stack:
        first = start_authz(stack, tmp_path, extra_args=drain)
        second = start_authz(stack, tmp_path, extra_args=drain)
        upstream = start_upstream(stack)
        listen, admin = free_port(), free_port()
        bootstrap = _two_authz_bootstrap(
            listen, admin, upstream.port, first.grpc_addr, second.grpc_addr
        )
        envoy = stack.enter_context(
            EnvoyProcess(bootstrap, admin_port=admin, ready_timeout=STARTUP_TIMEOUT)
        )
        deadline = time.monotonic() + 10
        while _healthy_hosts(envoy.admin_url) < 2:
            assert time.monotonic() < deadline, "Envoy never saw both authz replicas healthy"
            time.sleep(0.05)

        value = token(keys, scope="orders.read")
        statuses: Counter[str] = Counter()
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                try:
                    response = http_request(
                        f"http://127.0.0.1:{listen}",
                        "GET",
                        "/orders/1",
                        {"authorization": f"Bearer {value}"},
                        timeout=5,
                    )
                    statuses[str(response.status)] += 1
                except OSError as exc:
                    statuses[type(exc).__name__] += 1

        clients = [threading.Thread(target=load) for _ in range(4)]
        for client in clients:
            client.start()
        time.sleep(1.0)
        before = sum(statuses.values())
        os.kill(first.process.pid, signal.SIGTERM)
        code = first.process.stop(grace=15)  # returns once it has drained and exited
        time.sleep(0.5)  # and traffic keeps flowing to the other replica
        stop.set()
        for client in clients:
            client.join(timeout=10)

        assert code == 0
        assert set(statuses) == {"200"}, statuses
        assert before > 20 and statuses["200"] > before + 20, statuses
        served = [p.process.output().count('"event":"decision"') for p in (first, second)]
        assert all(n > 0 for n in served), served  # both replicas carried load
        print(
            f"drain: {sum(statuses.values())} requests through Envoy, all 200; per replica {served}"
        )
