"""Wiring only: the policy sources, the pipeline, the gRPC and HTTP transports, the ops port
and graceful drain on SIGTERM. Nothing below imports this module."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog
from google.protobuf.internal import api_implementation
from grpc_health.v1 import health_pb2

from authz import workers
from authz.introspection.manager import IntrospectionManager
from authz.keys.remote import KeyManager
from authz.keys.signing import SigningKeys
from authz.observe import tracing
from authz.observe.audit import Audit
from authz.observe.debug import Debug
from authz.observe.metrics import Metrics
from authz.observe.recorder import Recorder
from authz.oidc.jobs import Jobs
from authz.oidc.store import RedisSessions
from authz.ops import DebugHandler, OpsServer, WellKnown
from authz.policy.files import DirectorySource, DirectoryWatcher, load
from authz.policy.store import PolicyStore
from authz.policy.tenancy import own_namespace
from authz.request.assembly import pipeline
from authz.request.cache import TokenCache
from authz.request.internal_token import InternalTokens
from authz.request.login.runtime import LoginRuntime
from authz.request.nonces import Nonces
from authz.request.replay import LocalReplayCache, ReplayCache
from authz.settings import ServeSettings
from authz.tls import ServerCertificates, TLSError
from authz.transport.grpc import SERVICE, GrpcChecker, add_port, grpc_server
from authz.transport.http import HttpChecker, HttpTransport
from authz.transport.sockets import listen

log = structlog.get_logger("authz.server")

# A DPoP nonce secret (hex) the `--workers` supervisor hands its workers when no
# --dpop-nonce-secret-file is given, so each accepts the nonces the others hand out.
NONCE_SECRET_ENV = "AUTHZ_DPOP_NONCE_SECRET"  # noqa: S105 (the variable's name)


def policy_store(
    workload_labels: Mapping[str, str], threads: int, workload_namespace: str | None = None
) -> PolicyStore:
    """The store with its key manager and introspection manager: a quarter of the handler
    threads may wait long for a key refetch, half for an introspection answer (the normal
    path of a new opaque token), so a slow key server or introspection endpoint never
    holds all the threads other requests need."""
    return PolicyStore(
        workload_labels,
        KeyManager(wait_slots=max(1, threads // 4)),
        introspection=IntrospectionManager(wait_slots=max(1, threads // 2)),
        workload_namespace=workload_namespace,
    )


def debug_handler(store: PolicyStore, **options: Any) -> DebugHandler:
    """`/debug/*` answers. Explains run on a pipeline of their own, without a token cache
    and without a recorder: they neither fill nor read the serving cache, nor count as
    decisions. `options` as `assembly.pipeline` takes."""
    return Debug(store, pipeline(store, TokenCache(max_entries=0), **options)).handle


def nonces(settings: ServeSettings) -> Nonces:
    """DPoP server nonces: the secret from its file, else the supervisor's, else random."""
    secret: bytes | None = None
    if settings.dpop_nonce_secret_file is not None:
        secret = settings.dpop_nonce_secret_file.read_bytes().rstrip(b"\r\n")
        if not secret:
            raise ValueError(f"{settings.dpop_nonce_secret_file} is empty")
    elif os.environ.get(NONCE_SECRET_ENV):
        secret = bytes.fromhex(os.environ[NONCE_SECRET_ENV])
    return Nonces(secret, period=settings.dpop_nonce_seconds)


def replay_cache(settings: ServeSettings) -> ReplayCache:
    """Where DPoP proofs' jti values are remembered: this process, or Redis for all replicas."""
    if settings.dpop_replay_redis is None:
        return LocalReplayCache(settings.dpop_replay_entries)
    from authz.request.replay_redis import RedisReplayCache  # noqa: PLC0415 (only when asked)

    log.info("DPoP replay cache in Redis", timeout_ms=settings.dpop_replay_timeout_ms)
    return RedisReplayCache(
        settings.dpop_replay_redis, timeout=settings.dpop_replay_timeout_ms / 1000
    )


def well_known(issuer: str | None, keys_dir: Path | None) -> WellKnown | None:
    """The internal tokens' discovery and JWKS documents, their keys reread as they change
    (the `--workers` supervisor serves them too, on its own ops port)."""
    if issuer is None or keys_dir is None:
        return None
    keys = SigningKeys(keys_dir)
    keys.start()
    return WellKnown(issuer, keys)


def internal_tokens(settings: ServeSettings) -> tuple[InternalTokens, WellKnown | None]:
    """The minter (without keys when none were given: a policy asking for internal tokens
    then gets 503, never an upstream request without one) and what the ops port serves."""
    issuer, keys_dir = settings.internal_token_issuer, settings.internal_token_keys
    if issuer is None or keys_dir is None:
        return InternalTokens(None, ""), None
    keys = SigningKeys(keys_dir)
    if keys.current().active is None:
        problems = "; ".join(keys.current().problems) or "no key files"
        raise ValueError(f"no usable signing key in {keys_dir}: {problems}")
    keys.start()
    return InternalTokens(keys, issuer), WellKnown(issuer, keys)


def login_runtime(settings: ServeSettings) -> LoginRuntime:
    """Browser sign-in's I/O: a small pool for code exchanges, refreshes, discovery and
    Redis, on which at most a quarter of the handler threads wait at a time."""
    redis = None
    if settings.session_redis:
        password = None
        if settings.session_redis_password_file is not None:
            text = settings.session_redis_password_file.read_text(encoding="utf-8")
            password = text.removesuffix("\n")
        redis = RedisSessions(settings.session_redis, password=password)
    return LoginRuntime(jobs=Jobs(waiters=max(1, settings.threads // 4)), redis=redis)


class ServerState:
    def __init__(self, store: PolicyStore, synced: Callable[[], bool] = lambda: True) -> None:
        self.store = store
        self.synced = synced
        self.draining = threading.Event()

    def ready(self) -> bool:
        """A first full sync of every source is serving, and we are not draining."""
        return self.store.ready and self.synced() and not self.draining.is_set()


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


def _identity(worker: workers.Worker | None) -> str:
    """Who this process is to the cluster (Lease holder, status writer, Event reporter);
    every worker process of a pod competes under its own name."""
    name = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    return name if worker is None else f"{name}-w{worker.index}"


def _tls(settings: ServeSettings) -> ServerCertificates | None:
    """The Check listeners' certificates; unusable files stop the start with what is wrong."""
    if settings.tls is None:
        return None
    try:
        return ServerCertificates(settings.tls)
    except TLSError as exc:  # the CLI prints it as a usage error
        raise TLSError(f"--tls-cert-file/--tls-key-file: {exc}") from None


def _proxy_secret(path: Path | None) -> bytes | None:
    """The shared secret proxies send (`--http-proxy-secret-file`), without a final newline."""
    if path is None:
        return None
    secret = path.read_bytes().rstrip(b"\r\n")
    if not secret:
        raise ValueError(f"{path} is empty; a proxy secret must not be")
    return secret


def serve(settings: ServeSettings) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code."""
    if api_implementation.Type() != "upb":
        log.warning(
            "protobuf is not running on upb; Check will be slow", backend=api_implementation.Type()
        )
    worker = workers.current()
    if worker is not None:
        log.info("worker starting", worker=worker.index, of=worker.count, cpu=workers.pin(worker))
    # A namespaced cluster policy's workloadSelector selects only a workload in its namespace.
    store = policy_store(settings.workload_labels, settings.threads, own_namespace())
    # Not cleared on a policy swap: a cached token counts only while the policy trusts the
    # very issuer object (and key set) that verified it, and unchanged issuers are reused.
    cache = TokenCache(settings.cache_entries, max_bytes=settings.cache_mib << 20)
    options: dict[str, Any] = {
        "realm": settings.realm,
        "default_allow": settings.default_allow,
        "max_token_bytes": settings.max_token_bytes,
    }
    metrics = Metrics()
    metrics.watch(store, cache)
    metrics.watch_introspection(store.introspection)
    stoppers: list[Callable[[], None]] = []
    tracer = tracing.from_environment() if settings.tracing else None
    if tracer is not None:
        stoppers.append(tracer.shutdown)
    if settings.policy_dir is not None:
        source = DirectorySource(settings.policy_dir)
        load(source, store)
        watcher = DirectoryWatcher(source, store)
        watcher.propagation = metrics.propagation.observe
        watcher.start()
        stoppers.append(watcher.stop)
    controller = None
    if settings.kubernetes:  # the kubernetes client (~25 MB) is imported only in cluster mode
        from authz.policy.cluster import start_controller  # noqa: PLC0415

        controller = start_controller(
            store,
            kubeconfig=settings.kubeconfig,
            namespaces=settings.watch_namespaces,
            lease_namespace=settings.leader_election_namespace,
            lease_name=settings.leader_election_id,
            identity=_identity(worker),
            propagation=metrics.propagation.observe,
        )
        stoppers.append(controller.stop)
    stoppers.append(store.close)  # last: the sources above may rebuild until they stop

    minter, documents = internal_tokens(settings)
    replay = replay_cache(settings)
    stoppers.append(replay.close)
    shared: dict[str, Any] = {"nonces": nonces(settings), "internal_tokens": minter}
    sign_in = login_runtime(settings)
    stoppers.append(sign_in.close)
    # One pipeline (and token cache, replay cache, nonces, sign-in runtime) for both transports.
    checks = pipeline(store, cache, replay=replay, login=sign_in, **shared, **options)
    recorder = Recorder(Audit(metrics), tracer)
    certificates = _tls(settings)
    grpc = None
    if settings.grpc_addr is not None:
        credentials = certificates.grpc_credentials() if certificates else None
        grpc, health_servicer, _port = grpc_server(
            GrpcChecker(checks),
            settings.grpc_addr,
            recorder,
            settings.threads,
            reuse_port=worker is not None,
            credentials=credentials,
            queue_wait=metrics.queue_seconds.labels("grpc").observe,
        )
        if worker is not None:  # its own port too, for Envoy clusters that list every worker
            # credentials of its own: gRPC asks a port's fetcher for a first certificate
            # set, and a dynamic credentials object answers that once
            own = certificates.grpc_credentials() if certificates else None
            add_port(grpc, workers.own_address(settings.grpc_addr, worker), own)
    http = None
    if settings.http_check_addr is not None:
        # A worker serves the connections its supervisor accepts and hands over; no bind.
        checks_from = workers.inherited_check_source(settings.http_check_addr) or listen(
            settings.http_check_addr
        )
        secret = _proxy_secret(settings.http_proxy_secret_file)
        tls = certificates.ssl_context() if certificates else None
        http = HttpTransport(
            HttpChecker(checks, recorder, secret),
            checks_from,
            tls=tls,
            queue_wait=metrics.queue_seconds.labels("http").observe,
        )
    state = ServerState(store, (lambda: controller.source.ready) if controller else (lambda: True))
    # An explanation never records a DPoP proof as used: it gets a replay cache of its own.
    debug = debug_handler(store, **shared, **options) if settings.debug_endpoints else None
    ops = OpsServer(settings.http_addr, state.ready, metrics.exposition, debug, documents)
    ops.start()
    if grpc is not None:
        grpc.start()
        for name in ("", SERVICE):
            health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    if http is not None:
        http.start()
    log.info(
        "serving",
        grpc=settings.grpc_addr,
        tls=("mtls" if settings.tls.client_ca else "tls") if settings.tls else None,
        http_check=http.address if http is not None else None,
        http=settings.http_addr,
        policy_dir=str(settings.policy_dir) if settings.policy_dir else None,
        kubernetes=settings.kubernetes,
        snapshot=store.snapshot.version,
    )

    signum = wait_for_signal()
    log.info("draining", signal=signal.Signals(signum).name)
    state.draining.set()
    if grpc is not None:
        health_servicer.enter_graceful_shutdown()
    time.sleep(settings.shutdown_delay)  # let load balancers see /readyz fail first
    grpc_stopped = grpc.stop(grace=settings.shutdown_grace) if grpc is not None else None
    if http is not None:
        http.stop(settings.shutdown_grace)
    if grpc_stopped is not None:
        grpc_stopped.wait()
    for stop_source in stoppers:
        stop_source()
    ops.shutdown()
    log.info("stopped")
    return 0
