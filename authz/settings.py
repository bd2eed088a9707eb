"""What `authz serve` was asked to do, grouped by concern; read by the wiring only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from authz.tls import TLSFiles


@dataclass(frozen=True)
class ServeSettings:
    policy_dir: Path | None
    grpc_addr: str | None = "127.0.0.1:9001"  # None: no gRPC transport
    http_check_addr: str | None = None  # the HTTP transport's checks, when served
    http_proxy_secret_file: Path | None = None
    tls: TLSFiles | None = None  # TLS (mTLS with a client CA) on the Check listeners
    http_addr: str = "127.0.0.1:9002"
    realm: str = "authz"
    default_allow: bool = False
    workload_labels: Mapping[str, str] = field(default_factory=dict)
    threads: int = 16
    cache_entries: int = 100_000
    cache_mib: int = 256
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
    # DPoP (RFC 9449): where proofs' jti values are remembered, and the server nonces.
    dpop_replay_redis: str | None = None  # redis:// or unix:// URL; None: per process
    dpop_replay_timeout_ms: int = 50
    dpop_replay_entries: int = 500_000
    dpop_nonce_secret_file: Path | None = None
    dpop_nonce_seconds: int = 120
    # Internal tokens: authz as their issuer (its URL) and the directory of its signing keys.
    internal_token_issuer: str | None = None
    internal_token_keys: Path | None = None
    # Browser sign-in sessions kept in Redis (`login.session.store: redis`), shared by replicas.
    session_redis: str | None = None
    session_redis_password_file: Path | None = None
