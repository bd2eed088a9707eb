"""A key server the test controls: JWKS, OIDC discovery and X.509 maps on 127.0.0.1.

An in-process ThreadingHTTPServer (plain HTTP, or HTTPS with a CA made for the
test), whose routes can be switched at any time between good documents and the
faults real servers produce: errors, garbage, oversized or slow bodies,
redirects, being down. Every request is counted per path, so a test can assert
how often the authorizer fetched.

    with KeyServer() as server:
        server.json("/jwks", {"keys": [public_jwk]}, cache_control="max-age=60")
        server.fault("/jwks", status=500)
        server.hits("/jwks")
"""

from __future__ import annotations

import datetime
import json
import ssl
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from authz.keys.sources import FetchSettings
from authz.policy.schema import FETCH_DEFAULTS
from tests.support.pki import CA, pem_cert, pem_key
from tests.support.served import ServedInThread


def fetch_settings(**changes: Any) -> FetchSettings:
    """The schema's default fetch settings (plain http allowed), with `changes` applied."""
    d = FETCH_DEFAULTS
    values: dict[str, Any] = {
        "refresh": d["refreshSeconds"],
        "min_refresh": d["minRefreshSeconds"],
        "max_refresh": d["maxRefreshSeconds"],
        "cooldown": d["unknownKidCooldownSeconds"],
        "wait": d["unknownKidWaitMillis"] / 1000,
        "max_stale": d["maxStaleSeconds"],
        "timeout": d["timeoutSeconds"],
        "allow_http": True,
    }
    return FetchSettings(**{**values, **changes})


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the status line
    drip: float = 0.0  # seconds between body bytes
    length: bool = True  # send Content-Length (else the body ends when the connection closes)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        with self.server.lock:
            self.server.counts[path] += 1
            route = self.server.routes.get(path)
        if route is None:
            route = Route(b'{"error":"not found"}', 404)
        if route.delay:
            time.sleep(route.delay)
        try:
            self.send_response(route.status)
            for name, value in route.headers.items():
                self.send_header(name, value)
            if route.length:
                self.send_header("Content-Length", str(len(route.body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if route.drip:
                for i in range(len(route.body)):
                    self.wfile.write(route.body[i : i + 1])
                    self.wfile.flush()
                    time.sleep(route.drip)
            else:
                self.wfile.write(route.body)
        except OSError:  # the client gave up (timeouts are what some tests are about)
            pass
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, tls: ssl.SSLContext | None, host: str = "127.0.0.1") -> None:
        super().__init__((host, port), _Handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.lock = threading.Lock()
        self.routes: dict[str, Route] = {}
        self.counts: Counter[str] = Counter()


@dataclass(frozen=True)
class LocalCA:
    """A CA and a serving certificate for 127.0.0.1, as files."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_ca(directory: Path, ips: Sequence[str] = ()) -> LocalCA:
    """A throwaway CA and a leaf for 127.0.0.1 / localhost (and `ips`), valid for a day, as files."""
    ca = CA.create("authz test CA")
    key, cert = ca.serving("127.0.0.1", dns=["localhost"], ips=["127.0.0.1", *ips])
    directory.mkdir(parents=True, exist_ok=True)
    files = LocalCA(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca_file.write_bytes(pem_cert(ca.cert))
    files.cert_file.write_bytes(pem_cert(cert))
    files.key_file.write_bytes(pem_key(key))
    return files


def self_signed_cert_pem(private_key: Any, common_name: str = "securetoken") -> str:
    """A PEM certificate for `private_key`, as in Google's X.509 key maps."""
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(private_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class KeyServer(ServedInThread[_Server]):
    """The server; `url` is its base URL. Use as a context manager. `host` is the address
    it listens on (loopback unless a test needs another one)."""

    def __init__(self, ca: LocalCA | None = None, host: str = "127.0.0.1") -> None:
        self._tls = ca.server_context() if ca is not None else None
        super().__init__(_Server(0, self._tls, host), poll_interval=0.02)
        self.url = f"{'https' if ca else 'http'}://{host}:{self.port}"

    # -- routes ------------------------------------------------------------------------------

    def route(self, path: str, route: Route) -> None:
        with self._server.lock:
            self._server.routes[path] = route

    def json(self, path: str, doc: Any, *, cache_control: str | None = None) -> None:
        headers = {"Content-Type": "application/json"}
        if cache_control is not None:
            headers["Cache-Control"] = cache_control
        self.route(path, Route(json.dumps(doc).encode(), headers=headers))

    def discovery(self, issuer: str, jwks_path: str = "/jwks", *, at: str = "") -> None:
        """Serve a discovery document at `{at}/.well-known/openid-configuration`."""
        self.json(
            f"{at}/.well-known/openid-configuration",
            {"issuer": issuer, "jwks_uri": f"{self.url}{jwks_path}"},
        )

    def fault(
        self,
        path: str,
        *,
        status: int = 200,
        body: bytes = b"",
        delay: float = 0.0,
        drip: float = 0.0,
        headers: dict[str, str] | None = None,
        length: bool = True,
    ) -> None:
        self.route(path, Route(body, status, headers or {}, delay, drip, length))

    def hits(self, path: str) -> int:
        with self._server.lock:
            return self._server.counts[path]

    def total_hits(self) -> int:
        """Requests for any path, routed or not."""
        with self._server.lock:
            return sum(self._server.counts.values())

    # -- being down --------------------------------------------------------------------------

    def down(self) -> None:
        """Stop listening: connections to the port are refused until `up()`."""
        self.close()

    def up(self) -> None:
        """Listen again on the same port, with the same routes and counts."""
        old = self._server
        self._server = _Server(self.port, self._tls)
        self._server.routes, self._server.counts = old.routes, old.counts
        self._serve()
