"""Wiring only: the gRPC Check service, gRPC health and reflection, the HTTP ops port,
the policy watcher, and graceful drain on SIGTERM."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import structlog
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.protobuf.internal import api_implementation
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from authz import audit, metrics, tracing, workers
from authz.check import Checker, Outcome
from authz.debug import MAX_BODY, Debug
from authz.decision import Decision, Reason
from authz.policy.source import DirectorySource, DirectoryWatcher, load
from authz.policy.store import PolicyStore
from authz.request.cache import TokenCache

log = structlog.get_logger("authz.server")

SERVICE = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
# (method, path, body) -> (HTTP status, JSON answer): authz.debug.Debug.handle, or the
# `--workers` supervisor's forwarding to a worker.
DebugHandler = Callable[[str, str, bytes], tuple[int, dict[str, Any]]]


@dataclass(frozen=True)
class ServeSettings:
    policy_dir: Path | None
    grpc_addr: str = "127.0.0.1:9001"
    http_addr: str = "127.0.0.1:9002"
    realm: str = "authz"
    default_allow: bool = False
    workload_labels: Mapping[str, str] = field(default_factory=dict)
    threads: int = 16
    cache_entries: int = 100_000
    max_token_bytes: int = 16384
    shutdown_delay: float = 0.0
    shutdown_grace: float = 10.0
    debug_endpoints: bool = False
    tracing: bool = False
    workers: int = 1
    kubernetes: bool = False
    kubeconfig: str | None = None
    watch_namespaces: tuple[str, ...] = ()
    leader_election_namespace: str | None = None
    leader_election_id: str = "authz-status"


class AuthorizationService(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    def __init__(self, checker: Checker, tracer: tracing.Tracing | None = None) -> None:
        self._checker = checker
        self._tracer = tracer

    def Check(self, request: Any, context: Any) -> Any:
        started = time.perf_counter()
        try:
            response, outcome = self._checker.check(request)
        except Exception:  # fail closed: a bug denies the request, never opens it
            log.exception("check failed; denying")
            outcome = Outcome(Decision(False, Reason.INTERNAL_ERROR), None, None)
            response = self._checker.responder.deny(outcome.decision)
        seconds = time.perf_counter() - started
        audit.record(outcome, seconds)
        if self._tracer is not None:
            self._trace(request, outcome, seconds)
        return response

    def _trace(self, request: Any, outcome: Outcome, seconds: float) -> None:
        """A tracing failure is logged, never turned into a failed Check."""
        assert self._tracer is not None
        headers = (
            outcome.request.headers if outcome.request else request.attributes.request.http.headers
        )
        end = time.time_ns()
        try:
            self._tracer.record(headers, outcome, end - int(seconds * 1e9), end)
        except Exception:
            log.exception("tracing failed")


class _OpsHandler(BaseHTTPRequestHandler):
    """`/healthz` (alive), `/readyz` (a snapshot is serving and we are not draining), `/metrics`,
    and with `--debug-endpoints` `/debug/snapshot` and `/debug/explain` (see authz.debug)."""

    server: OpsServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._send(200, b"ok\n", "text/plain")
        elif path == "/readyz":
            ready = self.server.ready()
            self._send(200 if ready else 503, b"ok\n" if ready else b"not ready\n", "text/plain")
        elif path == "/metrics":
            self._send(200, self.server.metrics(), CONTENT_TYPE_LATEST)
        elif path.startswith("/debug/"):
            self._debug("GET", path, b"")
        else:
            self._send(404, b"not found\n", "text/plain")

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if not path.startswith("/debug/"):
            self._send(404, b"not found\n", "text/plain")
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._send(413, b"body missing or over 64 KiB\n", "text/plain")
            return
        self._debug("POST", path, self.rfile.read(length))

    def _debug(self, method: str, path: str, body: bytes) -> None:
        if self.server.debug is None:
            self._send(
                404, b"not found (debug endpoints are off: --debug-endpoints)\n", "text/plain"
            )
            return
        status, answer = self.server.debug(method, path, body)
        self._send(status, json.dumps(answer, indent=2).encode() + b"\n", "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


class OpsServer(ThreadingHTTPServer):
    """The HTTP ops port; also used by the `--workers` supervisor with its own answers."""

    daemon_threads = True

    def __init__(
        self,
        addr: str,
        ready: Callable[[], bool],
        metrics: Callable[[], bytes] = generate_latest,
        debug: DebugHandler | None = None,
    ) -> None:
        super().__init__(_host_port(addr), _OpsHandler)
        self.ready = ready
        self.metrics = metrics
        self.debug = debug

    def start(self) -> None:
        threading.Thread(target=self.serve_forever, name="ops-http", daemon=True).start()


class ServerState:
    def __init__(self, store: PolicyStore, synced: Callable[[], bool] = lambda: True) -> None:
        self.store = store
        self.synced = synced
        self.draining = threading.Event()

    def ready(self) -> bool:
        """A first full sync of every source is serving, and we are not draining."""
        return self.store.ready and self.synced() and not self.draining.is_set()


def _host_port(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def wait_for_signal() -> int:
    """Block until SIGTERM or SIGINT. The handler only records the signal: it runs between
    bytecodes of whatever the main thread is doing, so logging or taking locks there can
    deadlock with the interrupted code (a second SIGTERM during shutdown did)."""
    received: list[int] = []
    stop = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        received.append(signum)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    while not stop.wait(0.5):
        pass
    return received[0]


def grpc_server(
    checker: Checker,
    addr: str,
    threads: int = 16,
    *,
    reuse_port: bool = False,
    tracer: tracing.Tracing | None = None,
) -> tuple[grpc.Server, health.HealthServicer, int]:
    """The Check service with gRPC health and reflection, bound but not started.
    SO_REUSEPORT only for `--workers`: otherwise a second instance must fail to bind."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="check"),
        options=[("grpc.so_reuseport", 1 if reuse_port else 0)],
    )
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
        AuthorizationService(checker, tracer), server
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(addr)
    if port == 0 and not addr.startswith("unix:"):
        raise OSError(f"cannot listen on {addr}")
    return server, health_servicer, port


def serve(settings: ServeSettings) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code."""
    if api_implementation.Type() != "upb":
        log.warning(
            "protobuf is not running on upb; Check will be slow", backend=api_implementation.Type()
        )
    worker = workers.current()
    if worker is not None:
        log.info("worker starting", worker=worker.index, of=worker.count, cpu=workers.pin(worker))
    store = PolicyStore(settings.workload_labels)
    cache = TokenCache(settings.cache_entries)
    checker = Checker(
        store,
        realm=settings.realm,
        default_allow=settings.default_allow,
        cache=cache,
        max_token_bytes=settings.max_token_bytes,
    )
    metrics.register_state(store, cache)
    stoppers: list[Callable[[], None]] = []
    tracer = tracing.from_environment() if settings.tracing else None
    if tracer is not None:
        stoppers.append(tracer.shutdown)
    if settings.policy_dir is not None:
        source = DirectorySource(settings.policy_dir)
        load(source, store)
        watcher = DirectoryWatcher(source, store)
        watcher.propagation = metrics.PROPAGATION.observe
        watcher.start()
        stoppers.append(watcher.stop)
    controller = None
    if settings.kubernetes:  # the kubernetes client (~25 MB) is imported only in cluster mode
        from authz.controller import start_controller  # noqa: PLC0415

        controller = start_controller(settings, store)
    if controller is not None:
        stoppers.append(controller.stop)
    stoppers.append(store.close)  # last: the sources above may rebuild until they stop

    server, health_servicer, _port = grpc_server(
        checker, settings.grpc_addr, settings.threads, reuse_port=worker is not None, tracer=tracer
    )
    if worker is not None:  # its own port too, for Envoy clusters that list every worker
        server.add_insecure_port(workers.own_address(settings.grpc_addr, worker))
    state = ServerState(store, (lambda: controller.source.ready) if controller else (lambda: True))
    debug = None
    if settings.debug_endpoints:
        debug = Debug(
            store, settings.realm, settings.default_allow, settings.max_token_bytes
        ).handle
    ops = OpsServer(settings.http_addr, state.ready, debug=debug)
    ops.start()
    server.start()
    for name in ("", SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "serving",
        grpc=settings.grpc_addr,
        http=settings.http_addr,
        policy_dir=str(settings.policy_dir) if settings.policy_dir else None,
        kubernetes=settings.kubernetes,
        snapshot=store.snapshot.version,
    )

    signum = wait_for_signal()
    log.info("draining", signal=signal.Signals(signum).name)
    state.draining.set()
    health_servicer.enter_graceful_shutdown()
    time.sleep(settings.shutdown_delay)  # let load balancers see /readyz fail first
    server.stop(grace=settings.shutdown_grace).wait()
    for stop_source in stoppers:
        stop_source()
    ops.shutdown()
    log.info("stopped")
    return 0
