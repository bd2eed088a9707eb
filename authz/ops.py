"""The HTTP ops port: `/healthz`, `/readyz`, `/metrics`, if enabled `/debug/*`, and with
internal tokens their issuer's `/.well-known/openid-configuration` and `/.well-known/jwks.json`.

Served by every `authz serve` process and, with its own answers, by the `--workers`
supervisor; it knows nothing of Checks, only the callables it is given.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from authz.keys.signing import SigningKeys, discovery_document

MAX_BODY = 64 * 1024  # a debug request: a token and a few headers
WELL_KNOWN_CACHE_SECONDS = 60  # a verifier sees a new key within a minute of its rotation
# (method, path, body) -> (HTTP status, JSON answer): authz.observe.debug.Debug.handle, or the
# `--workers` supervisor's forwarding to a worker.
DebugHandler = Callable[[str, str, bytes], tuple[int, dict[str, Any]]]


class _OpsHandler(BaseHTTPRequestHandler):
    """`/healthz` (alive), `/readyz` (a snapshot is serving and we are not draining), `/metrics`,
    and with `--debug-endpoints` `/debug/snapshot` and `/debug/explain` (see authz.observe.debug)."""

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
        elif self.server.well_known is not None and path in self.server.well_known.paths:
            body = self.server.well_known.document(path)
            self._send(200, body, "application/json", cache_seconds=WELL_KNOWN_CACHE_SECONDS)
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

    def _send(self, status: int, body: bytes, content_type: str, cache_seconds: int = 0) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if cache_seconds:
            self.send_header("Cache-Control", f"public, max-age={cache_seconds}")
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
        well_known: WellKnown | None = None,
    ) -> None:
        super().__init__(_host_port(addr), _OpsHandler)
        self.ready = ready
        self.metrics = metrics
        self.debug = debug
        self.well_known = well_known

    def start(self) -> None:
        threading.Thread(target=self.serve_forever, name="ops-http", daemon=True).start()


class WellKnown:
    """authz as the issuer of internal tokens: its OpenID discovery document and JWKS, under
    the issuer URL's path, so ordinary libraries (and another authz) verify those tokens.
    The JWKS is read from the signing keys on every request: a rotation shows at once."""

    def __init__(self, issuer: str, keys: SigningKeys) -> None:
        base = urlsplit(issuer).path.rstrip("/")
        self._discovery = json.dumps(discovery_document(issuer), indent=2).encode() + b"\n"
        self._keys = keys
        self.discovery_path = f"{base}/.well-known/openid-configuration"
        self.jwks_path = f"{base}/.well-known/jwks.json"
        self.paths = frozenset({self.discovery_path, self.jwks_path})

    def document(self, path: str) -> bytes:
        if path == self.discovery_path:
            return self._discovery
        return json.dumps(self._keys.current().jwks(), indent=2).encode() + b"\n"


def _host_port(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)
