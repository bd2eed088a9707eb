"""Start and stop the processes under test: authz, the trivial server, OPA-Envoy, Envoy.

Each is a real subprocess on 127.0.0.1 with free ports, started the way a user would
(`python -m authz serve ...`), so the numbers include everything the product does per
request (audit log line, metrics). A `Stack` owns what it started and stops it on exit.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from tests.bench.layout import Layout, pin_tree, taskset
from tests.support.envoy import EnvoyProcess
from tests.support.procs import (
    Process,
    free_port,
    http_request,
    wait_for_addr,
    wait_for_http,
)
from tests.support.served import ClosedOnExit

REPO_ROOT = Path(__file__).resolve().parents[2]
#: 1000 policies take a while to parse (pure-Python YAML); don't mistake that for a hang.
STARTUP_TIMEOUT = 300.0
CHECK_METHOD = "/envoy.service.auth.v3.Authorization/Check"


def child_env(source: Path = REPO_ROOT) -> dict[str, str]:
    """The environment of a child: `source` (holding the `authz` package) first on the path."""
    env = dict(os.environ)
    paths = (str(source), str(REPO_ROOT), env.get("PYTHONPATH"))
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in paths if p))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def extra_authz_args() -> list[str]:
    """`BENCH_AUTHZ_ARGS` (e.g. "--log-level warning") is appended to every `authz serve`."""
    return shlex.split(os.environ.get("BENCH_AUTHZ_ARGS", ""))


@dataclass
class Server:
    """An ext_authz server under test (authz, a trivial server or OPA-Envoy)."""

    name: str
    process: Process
    grpc_addr: str  # its gRPC ext_authz HOST:PORT ("" for an HTTP-only server)
    http_url: str | None = None  # its metrics endpoint
    check_http_addr: str | None = None  # its HTTP ext_authz HOST:PORT, if it has one

    @property
    def pid(self) -> int:
        return self.process.pid

    def check(self, request: Any) -> Any:
        """One Check over a fresh channel: used to prove a scenario's request is answered
        the way the scenario claims before load is put on it."""
        with grpc.insecure_channel(self.grpc_addr) as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            return stub.Check(request, timeout=10)

    def metric(self, name: str) -> float | None:
        """A sample from authz's /metrics (None for peers without one)."""
        if self.http_url is None:
            return None
        text = wait_for_http(f"{self.http_url}/metrics", timeout=5.0).decode()
        values = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith((name + " ", name + "{"))
        ]
        return sum(values) if values else None  # summed over workers' labelled series

    def metric_by_worker(self, name: str) -> dict[str, float]:
        """A sample from a `--workers` supervisor's /metrics, summed per `worker` label."""
        if self.http_url is None:
            return {}
        text = wait_for_http(f"{self.http_url}/metrics", timeout=5.0).decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith(name + "{") and 'worker="' in line:
                worker = line.split('worker="', 1)[1].split('"', 1)[0]
                out[worker] = out.get(worker, 0.0) + float(line.rsplit(" ", 1)[1])
        return out


@dataclass
class Proxy:
    envoy: EnvoyProcess
    port: int

    @property
    def pid(self) -> int:
        assert self.envoy.process is not None
        return self.envoy.process.pid

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def status(self, path: str, host: str, token: str | None) -> int:
        headers = {"host": host}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        return http_request(f"http://127.0.0.1:{self.port}", "GET", path, headers).status


class Stack(ClosedOnExit):
    """Processes started for one phase of the run; all stopped when the `with` ends.
    Servers start on `layout.server` CPUs, Envoy goes where its role says."""

    def __init__(self, layout: Layout | None = None) -> None:
        self._exit = ExitStack()
        self.layout = layout or Layout()

    def close(self) -> None:
        self._exit.close()

    def _own(self, proc: Process) -> Process:
        def stop() -> None:
            proc.stop()
            proc.cleanup()

        self._exit.callback(stop)
        return proc

    def authz(
        self,
        policy_dir: Path,
        extra_args: Sequence[str] = (),
        grpc_port: int | None = None,
        pinned: bool = True,
        transport: str = "grpc",
        python: Path | None = None,
        source: Path = REPO_ROOT,
    ) -> Server:
        """`authz serve` on free ports, on the server CPUs unless `pinned` is false;
        `transport` "grpc" or "http" is the one it serves checks on; `python` runs it
        (default: this interpreter); `source` is where the `authz` package is imported
        from (default this checkout; another version, for tests.bench.compare)."""
        http = transport == "http"
        grpc_addr = "" if http else f"127.0.0.1:{grpc_port or free_port()}"
        check_addr = f"127.0.0.1:{free_port()}" if http else ""
        http_port = free_port()
        argv = [
            *taskset(self.layout.server if pinned else None),
            str(python or sys.executable), "-m", "authz", "serve",
            "--policy-dir", str(policy_dir),
            "--grpc-addr", grpc_addr or "off",
            "--http-check-addr", check_addr or "off",
            "--http-addr", f"127.0.0.1:{http_port}",
            *extra_args,
            *extra_authz_args(),
        ]  # fmt: skip
        env = child_env(source)
        proc = self._own(Process(argv, name="authz", env=env, cwd=source).start())
        http_url = f"http://127.0.0.1:{http_port}"
        wait_for_http(f"{http_url}/readyz", STARTUP_TIMEOUT, proc=proc)
        wait_for_addr(grpc_addr or check_addr, STARTUP_TIMEOUT, proc=proc)
        return Server("authz", proc, grpc_addr, http_url, check_http_addr=check_addr or None)

    def trivial(self, extra_args: Sequence[str] = ()) -> Server:
        """The gRPC floor: tests.bench.trivial_server."""
        grpc_addr = f"127.0.0.1:{free_port()}"
        argv = [
            *taskset(self.layout.server),
            sys.executable, "-m", "tests.bench.trivial_server", "--addr", grpc_addr,
            *extra_args,
        ]  # fmt: skip
        proc = self._own(Process(argv, name="trivial", env=child_env(), cwd=REPO_ROOT).start())
        wait_for_addr(grpc_addr, STARTUP_TIMEOUT, proc=proc)
        return Server("trivial", proc, grpc_addr)

    def trivial_http(self, extra_args: Sequence[str] = ()) -> Server:
        """The HTTP floor: tests.bench.trivial_http_server (`extra_args`: --loop, --handoff)."""
        module = ["-m", "tests.bench.trivial_http_server"]
        return self.http_server("trivial-http", [sys.executable, *module, *extra_args])

    def http_server(self, name: str, argv: Sequence[str], addr_flag: str = "--addr") -> Server:
        """An HTTP ext_authz server started as `argv` + `addr_flag HOST:PORT` (a free port)
        on the server CPUs; `addr_flag` "" means `--host 127.0.0.1 --port PORT` (granian)."""
        port = free_port()
        addr = f"127.0.0.1:{port}"
        where = [addr_flag, addr] if addr_flag else ["--host", "127.0.0.1", "--port", str(port)]
        command = [*taskset(self.layout.server), *argv, *where]
        proc = self._own(Process(command, name=name, env=child_env(), cwd=REPO_ROOT).start())
        wait_for_addr(addr, STARTUP_TIMEOUT, proc=proc)
        return Server(name, proc, "", check_http_addr=addr)

    def opa(self, binary: Path, rego: Path, data: Path, workdir: Path) -> Server:
        """OPA-Envoy: the envoy_ext_authz_grpc plugin answering `data.envoy.authz.allow`."""
        grpc_port, http_port = free_port(), free_port()
        config = workdir / "opa-config.json"
        config.write_text(
            '{"plugins": {"envoy_ext_authz_grpc": {'
            f'"addr": "127.0.0.1:{grpc_port}", "path": "envoy/authz/allow"'
            '}}, "decision_logs": {"console": false}}',
            encoding="utf-8",
        )
        # Started under taskset, so Go sizes GOMAXPROCS to the one core it gets.
        argv = [
            *taskset(self.layout.server),
            str(binary), "run", "--server",
            "--addr", f"127.0.0.1:{http_port}",
            "--config-file", str(config),
            "--log-level", "error",
            "--disable-telemetry",
            str(rego), str(data),
        ]  # fmt: skip
        proc = self._own(Process(argv, name="opa-envoy").start())
        http_url = f"http://127.0.0.1:{http_port}"
        wait_for_http(f"{http_url}/health?plugins", STARTUP_TIMEOUT, proc=proc)
        wait_for_addr(f"127.0.0.1:{grpc_port}", STARTUP_TIMEOUT, proc=proc)
        return Server("opa-envoy", proc, f"127.0.0.1:{grpc_port}")

    def envoy(
        self, bootstrap: dict[str, Any], listen_port: int, admin_port: int, *, front: bool
    ) -> Proxy:
        """Envoy (one worker). `front`: it sits before an ext_authz server and shares the
        load generator's CPU; otherwise Envoy is itself under test and gets the server CPU."""
        envoy = EnvoyProcess(bootstrap, admin_port=admin_port, ready_timeout=60.0)

        def stop() -> None:
            envoy.stop()
            envoy.cleanup()

        self._exit.callback(stop)
        envoy.start()
        proxy = Proxy(envoy, listen_port)
        pin_tree(proxy.pid, self.layout.front if front else self.layout.server)
        return proxy


def ports_free(ports: Sequence[int]) -> bool:
    """Whether every one of `ports` can be bound on 127.0.0.1 right now."""
    try:
        for port in ports:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


def check_request(host: str, path: str, token: str | None, method: str = "GET") -> Any:
    """A CheckRequest shaped like the ones Envoy sends (pseudo-headers, addresses, ids)."""
    request = external_auth_pb2.CheckRequest()
    attrs = request.attributes
    attrs.source.address.socket_address.address = "127.0.0.1"
    attrs.source.address.socket_address.port_value = 51234
    attrs.destination.address.socket_address.address = "127.0.0.1"
    attrs.destination.address.socket_address.port_value = 10000
    http = attrs.request.http
    http.id = "13452345234523452345"
    http.method, http.host, http.path = method, host, path
    http.scheme, http.protocol = "http", "HTTP/1.1"
    headers = {
        ":authority": host,
        ":method": method,
        ":path": path,
        ":scheme": "http",
        "user-agent": "bench/1.0",
        "accept": "*/*",
        "x-forwarded-proto": "http",
        "x-request-id": "5b3c3d0e-8a55-4f5e-9d7e-2f2a1f0c9b11",
    }
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    http.headers.update(headers)
    attrs.request.time.GetCurrentTime()
    return request


def grpc_frame(message: Any) -> bytes:
    """The body of a unary gRPC call: uncompressed flag, 4-byte length, the message."""
    payload: bytes = message.SerializeToString()
    return b"\x00" + len(payload).to_bytes(4, "big") + payload
