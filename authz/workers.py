"""`authz serve --workers N`: one process per core, each pinned to its core.

Python runs one Check at a time per process, so a core each is how authz uses a
machine. The supervisor (the process started) runs N workers, each a complete
server. HTTP checks: the supervisor binds the one listening socket, so no other process
can co-bind the port (issue 11), accepts on it and hands each connection to the next ready
worker (authz.transport.handoff: workers accepting on one shared socket split the
connections unevenly, often all to one).
gRPC: grpcio cannot serve an inherited socket, so each worker listens on the shared
port with SO_REUSEPORT (the kernel spreads connections) and on its own port
`PORT+10+i` (Envoy keeps one HTTP/2 connection per Envoy worker, so listing every
worker's port as an endpoint balances best).
The supervisor restarts a worker that dies, answers `/readyz` only when every
worker is ready, serves every worker's metrics with a `worker` label, and passes
SIGTERM on so each worker drains.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import Counter, Gauge, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

from authz.ops import OpsServer, WellKnown
from authz.transport.handoff import Dispatcher, Handed
from authz.transport.sockets import address_of, listen

log = structlog.get_logger("authz.workers")

ENV = "AUTHZ_WORKER"  # "i/N" in a worker's environment
# The worker's end of its pair, on which the supervisor hands it HTTP check connections.
CHECK_FD_ENV = "AUTHZ_HTTP_CHECK_FD"
# The supervisor's own series, kept out of the default registry so workers do not export them.
_OWN = CollectorRegistry()
RESTARTS = Counter(
    "authz_worker_restarts", "Workers restarted after exiting unexpectedly.", registry=_OWN
)
FOREIGN = Gauge(
    "authz_foreign_listeners",
    "Listening sockets on the shared gRPC port held by no worker: another process co-bound "
    "it (SO_REUSEPORT) and would answer a share of the Checks. /readyz fails while any exist.",
    registry=_OWN,
)
FOREIGN_CHECK_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Worker:
    index: int
    count: int


def current() -> Worker | None:
    """This process's worker identity, or None when not run by a supervisor."""
    value = os.environ.get(ENV)
    if not value:
        return None
    index, _, count = value.partition("/")
    return Worker(int(index), int(count))


def inherited_check_source(address: str) -> Handed | None:
    """Where this worker gets its HTTP check connections (its supervisor listens on
    `address`), or None when not run by a supervisor."""
    fd = os.environ.get(CHECK_FD_ENV)
    if not fd or current() is None:
        return None
    pair = socket.socket(fileno=int(fd))
    pair.setblocking(False)
    return Handed(pair, address)


OWN_PORT_OFFSET = 10  # not 1: the ops port conventionally sits right after the gRPC port


def own_address(grpc_addr: str, worker: Worker) -> str:
    host, _, port = grpc_addr.rpartition(":")
    return f"{host}:{int(port) + OWN_PORT_OFFSET + worker.index}"


def pin(worker: Worker) -> int | None:
    """Pin this process to one allowed CPU (round robin); None where not permitted."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
        cpu = cpus[worker.index % len(cpus)]
        os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError):
        return None
    return cpu


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _without(argv: list[str], *flags: str) -> list[str]:
    """Drop `--flag value` and `--flag=value` for each flag."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in flags:
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


# A worker that drained (0) or was stopped by SIGTERM before its handler was installed.
_STOPPED = (0, -signal.SIGTERM)


class _WorkerMetrics(Collector):
    """Every worker's metrics, re-labelled with `worker`, read at scrape time."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for index, port in enumerate(self._supervisor.ops_ports):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                    text = resp.read().decode()
            except OSError:
                continue  # a restarting worker: its series are absent for one scrape
            for family in text_string_to_metric_families(text):
                target = merged.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type, family.unit)
                )
                for sample in family.samples:
                    labels = {**sample.labels, "worker": str(index)}
                    target.samples.append(sample._replace(labels=labels))
        yield from merged.values()


class _HandedConnections(Collector):
    """HTTP check connections the supervisor handed to each worker."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "authz_worker_http_connections",
            "HTTP check connections the supervisor accepted and handed to each worker.",
            labels=["worker"],
        )
        for index, count in enumerate(self._dispatcher.handed):
            family.add_metric([str(index)], count)
        yield family


def _listening_inodes(port: int) -> set[int]:
    """Inodes of the sockets listening on `port` in this network namespace (any process)."""
    found: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if (
                len(fields) > 9
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                found.add(int(fields[9]))
    return found


def _socket_inodes(pid: int) -> set[int]:
    found: set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


def foreign_listeners(port: int, pids: list[int]) -> set[int]:
    """Sockets listening on the shared `port` that none of `pids` holds.

    The workers share the gRPC port with SO_REUSEPORT (grpcio has no API to serve one
    inherited socket), and Linux lets any process of the same user in the pod's network
    namespace join that group and take a share of the connections (issue 11, item 15).
    Joining cannot be prevented from here; it can be seen.
    """
    listening = _listening_inodes(port)
    if not listening:
        return set()
    ours: set[int] = set()
    for pid in pids:
        ours |= _socket_inodes(pid)
    return listening - ours


class Supervisor:
    def __init__(
        self,
        argv: list[str],
        count: int,
        http_addr: str,
        drain_seconds: float,
        grpc_port: int | None,
        *,
        check_addr: str | None = None,
        well_known: WellKnown | None = None,
    ) -> None:
        """`grpc_port`: the shared gRPC port to watch for foreign listeners (None: no gRPC);
        `check_addr`: the HTTP check address, bound here once for every worker."""
        self.count = count
        self.well_known = well_known  # internal tokens' discovery and JWKS, served here too
        self.grpc_port = grpc_port
        self._foreign: set[int] = set()
        self.http_addr = http_addr
        self.drain_seconds = drain_seconds
        self.ops_ports = [_free_port() for _ in range(count)]
        # Bound here, before any worker starts: a port in use fails the supervisor at once.
        self.check_socket = listen(check_addr) if check_addr is not None else None
        self.dispatcher = Dispatcher(self.check_socket, count) if self.check_socket else None
        self._argv = _without(argv, "--workers", "--http-addr")
        self._procs: list[subprocess.Popen[bytes]] = []
        self._draining = threading.Event()

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        env = {**os.environ, ENV: f"{index}/{self.count}"}
        pair = self.dispatcher.attach(index) if self.dispatcher is not None else None
        if pair is not None:
            env[CHECK_FD_ENV] = str(pair.fileno())
        command = [
            sys.executable, "-m", "authz", "serve", *self._argv,
            "--http-addr", f"127.0.0.1:{self.ops_ports[index]}",
        ]  # fmt: skip
        try:
            return subprocess.Popen(command, env=env, pass_fds=(pair.fileno(),) if pair else ())
        finally:
            if pair is not None:
                pair.close()  # the worker has its own copy

    def ready(self) -> bool:
        if self._draining.is_set() or self._foreign:
            return False
        if self.dispatcher is not None and not self.dispatcher.all_ready():
            return False  # a worker that does not serve HTTP checks yet
        for port in self.ops_ports:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
                    if resp.status != 200:
                        return False
            except OSError:
                return False
        return True

    def _check_listeners(self) -> None:
        if self.grpc_port is None:  # HTTP checks only: one socket, ours alone, nothing to join
            return
        foreign = foreign_listeners(self.grpc_port, [p.pid for p in self._procs])
        if foreign != self._foreign:
            if foreign:
                log.error(
                    "another process listens on the shared gRPC port and would answer a share "
                    "of the Checks; not ready until it is gone",
                    port=self.grpc_port,
                    sockets=sorted(foreign),
                )
            else:
                log.info("no foreign listener on the shared gRPC port", port=self.grpc_port)
        self._foreign = foreign
        FOREIGN.set(len(foreign))

    def debug(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """`--debug-endpoints`: every worker serves the same policy, so the first one answers
        (the next one while it restarts)."""
        error = "no worker answered"
        for port in self.ops_ports:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}{path}", data=body or None, method=method
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 (http URL above)
                    return resp.status, json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read() or b"{}")
            except OSError as exc:
                error = str(exc)
        return 503, {"error": error}

    def metrics(self) -> bytes:
        registry = CollectorRegistry()
        registry.register(_WorkerMetrics(self))
        if self.dispatcher is not None:
            registry.register(_HandedConnections(self.dispatcher))
        return generate_latest(registry) + generate_latest(_OWN)

    def run(self) -> int:
        self._procs = [self._spawn(i) for i in range(self.count)]
        if self.dispatcher is not None:
            self.dispatcher.start()
        debug = self.debug if "--debug-endpoints" in self._argv else None
        ops = OpsServer(self.http_addr, self.ready, self.metrics, debug, self.well_known)
        ops.start()
        log.info(
            "supervising workers",
            workers=self.count,
            http=self.http_addr,
            http_check=address_of(self.check_socket) if self.check_socket else None,
        )

        received: list[int] = []

        def _on_signal(signum: int, _frame: Any) -> None:  # only records: see wait_for_signal
            received.append(signum)

        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
        checked = 0.0
        while not received:
            if time.monotonic() - checked >= FOREIGN_CHECK_SECONDS:
                checked = time.monotonic()
                self._check_listeners()
            for index, proc in enumerate(self._procs):
                code = proc.poll()
                if code is None:
                    continue
                if code in _STOPPED:  # told to stop (a SIGTERM to the whole group): drain all
                    received.append(signal.SIGTERM)
                    break
                log.error("worker exited; restarting", worker=index, code=code)
                RESTARTS.inc()
                self._procs[index] = self._spawn(index)
            time.sleep(0.2)
        log.info("draining workers", signal=signal.Signals(received[0]).name)
        self._draining.set()
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.drain_seconds + 5
        code = 0
        for proc in self._procs:
            try:
                if proc.wait(timeout=max(0.1, deadline - time.monotonic())) not in _STOPPED:
                    code = 1
            except subprocess.TimeoutExpired:
                proc.kill()
                code = 1
        ops.shutdown()
        # Handing out until the workers are gone: through --shutdown-delay they answer new
        # connections too; after that, as before, a new one waits in the backlog until closed.
        if self.dispatcher is not None:
            self.dispatcher.stop()
        if self.check_socket is not None:
            self.check_socket.close()
        log.info("stopped")
        return code
