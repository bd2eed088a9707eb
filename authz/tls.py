"""Serving certificates from files, reloaded when the files change (cert-manager rotates
them in place), for every TLS listener: the gRPC Check port, the HTTP check port and the
admission webhook.

`ServerCertificates` checks the files' signature (path, size, mtime, inode, which a
Kubernetes Secret volume's `..data` symlink swap changes) at most once per `interval`
when a new connection arrives, and loads a changed set only if the key matches the
certificate and the client CA parses: a half-written rotation keeps the last good set
and logs why. Connections already open keep the certificate they were made with.

gRPC asks for the configuration before every handshake (`grpc_credentials`); Python's
ssl servers (asyncio, http.server) swap the context from the SNI callback, which OpenSSL
calls for every ClientHello, with or without a server name (`ssl_context`).
"""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("authz.tls")

_Signature = tuple[tuple[str, int, int, int], ...]


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """Where the serving certificate chain and key are; with `client_ca`, clients must
    present a certificate signed by one of its CAs (mTLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.cert, self.key) + ((self.client_ca,) if self.client_ca else ())


class TLSError(ValueError):
    """The files do not make a usable serving certificate (what is wrong, for the operator)."""


@dataclass(frozen=True, slots=True)
class Loaded:
    """One consistent set of PEM files and the ssl context made from them."""

    cert_pem: bytes
    key_pem: bytes
    client_ca_pem: bytes | None
    context: ssl.SSLContext
    generation: int


def _signature(files: TLSFiles) -> _Signature:
    out = []
    for path in files.paths:
        try:
            st = path.stat()  # follows symlinks: a swapped ..data target changes the inode
        except OSError:
            out.append((str(path), -1, -1, -1))
            continue
        out.append((str(path), st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(out)


def _context(files: TLSFiles) -> ssl.SSLContext:
    """A server context from the files; raises TLSError saying which file is wrong."""
    for path in files.paths:
        if not path.is_file():
            raise TLSError(f"{path}: no such file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])  # the Python servers speak HTTP/1.1 only
    try:
        context.load_cert_chain(str(files.cert), str(files.key))
    except (ssl.SSLError, OSError) as exc:
        raise TLSError(
            f"{files.cert} and {files.key}: not a PEM certificate chain and its private key "
            f"({exc.strerror or exc})"
        ) from None
    if files.client_ca is not None:
        try:
            context.load_verify_locations(cafile=str(files.client_ca))
        except (ssl.SSLError, OSError) as exc:
            raise TLSError(f"{files.client_ca}: not a PEM CA bundle ({exc})") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _read(files: TLSFiles, generation: int) -> Loaded:
    context = _context(files)  # validates before the bytes are used anywhere
    try:
        cert, key = files.cert.read_bytes(), files.key.read_bytes()
        ca = files.client_ca.read_bytes() if files.client_ca else None
    except OSError as exc:
        raise TLSError(f"{exc.filename}: {exc.strerror}") from None
    return Loaded(cert, key, ca, context, generation)


class ServerCertificates:
    """The current serving certificate of some files; see the module docstring."""

    def __init__(self, files: TLSFiles, *, interval: float = 1.0) -> None:
        self.files = files
        self._interval = interval
        self._lock = threading.Lock()
        self._signature = _signature(files)
        self._current = _read(files, 1)  # a bad set at start-up is an error the caller shows
        self._next_check = time.monotonic() + interval
        self._rejected: _Signature | None = None

    @property
    def mutual(self) -> bool:
        return self.files.client_ca is not None

    @property
    def generation(self) -> int:
        """1 at start, +1 for every set of files loaded since."""
        return self._current.generation

    def current(self) -> Loaded:
        """The set to use for a new connection: reloaded first if the files changed."""
        now = time.monotonic()
        if now < self._next_check:
            return self._current
        with self._lock:
            if now < self._next_check:
                return self._current
            self._next_check = now + self._interval
            signature = _signature(self.files)
            if signature in (self._signature, self._rejected):
                return self._current
            try:
                loaded = _read(self.files, self._current.generation + 1)
            except TLSError as exc:
                self._rejected = signature  # logged once per change, retried on the next
                log.warning("tls reload failed; keeping the current certificate", error=str(exc))
                return self._current
            self._signature, self._rejected, self._current = signature, None, loaded
            log.info(
                "tls certificate reloaded", cert=str(self.files.cert), generation=loaded.generation
            )
            return loaded

    def ssl_context(self) -> ssl.SSLContext:
        """A context for Python's ssl servers that hands each handshake the current set."""
        outer = _context(self.files)

        def _swap(conn: Any, _server_name: str | None, _context: ssl.SSLContext) -> None:
            conn.context = self.current().context

        outer.sni_callback = _swap
        return outer

    def grpc_credentials(self) -> Any:
        """grpc.ServerCredentials asking for the current set before every handshake. One
        per port: gRPC asks each port's fetcher for a first set, and grpcio answers with the
        initial configuration only once per credentials object."""
        import grpc  # noqa: PLC0415  (only the gRPC listener needs it)

        def _config(loaded: Loaded) -> Any:
            return grpc.ssl_server_certificate_configuration(
                [(loaded.key_pem, loaded.cert_pem)], root_certificates=loaded.client_ca_pem
            )

        served = [self._current.generation]

        def _fetch() -> Any:
            loaded = self.current()
            if loaded.generation == served[0]:
                return None  # unchanged: gRPC keeps what it has
            served[0] = loaded.generation
            return _config(loaded)

        return grpc.dynamic_ssl_server_credentials(
            _config(self._current), _fetch, require_client_authentication=self.mutual
        )
