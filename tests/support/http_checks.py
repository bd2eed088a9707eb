"""authz's HTTP check transport in this process on a free loopback port, and a raw HTTP/1.1
client that shows exactly what a proxy would read (status, headers, body, connection state).

    with http_check_server(serve(issuer(), policy())) as server:
        with server.connect() as conn:
            response = conn.request("GET", "/check/envoy/orders/1", {"host": "api.example"})
            assert response.status == 401

The server is the real one (`HttpTransport` on uvloop, the server's pipeline and Recorder
with metrics on a registry of its own); requests are bytes on a socket, parsed back with
httptools' response parser, so pipelining, keep-alive and framing are what the wire says.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httptools
from prometheus_client import CollectorRegistry

from authz.observe.audit import Audit
from authz.observe.metrics import Metrics
from authz.observe.recorder import Recorder
from authz.request.assembly import pipeline
from authz.request.cache import TokenCache
from authz.request.pipeline import Serving
from authz.transport.http import HttpChecker, HttpLimits, HttpTransport
from authz.transport.sockets import listen
from tests.support.served import ClosedOnExit


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header's values joined with ", "
    body: bytes
    keep_alive: bool

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Reading:
    """httptools response-parser callbacks, collecting complete responses."""

    done: list[Response] = field(default_factory=list)
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    parser: Any = None

    def on_message_begin(self) -> None:
        self.headers, self.body = {}, bytearray()

    def on_header(self, name: bytes, value: bytes) -> None:
        key, text = name.decode().lower(), value.decode()
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        keep = self.parser.should_keep_alive()
        status = self.parser.get_status_code()
        self.done.append(Response(status, self.headers, bytes(self.body), keep))


class Connection(ClosedOnExit):
    """One client connection; `request` for one exchange, `send` + `responses` for more."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._reading = _Reading()
        self._reading.parser = httptools.HttpResponseParser(self._reading)
        self._head_requests = 0

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def responses(self, count: int, timeout: float = 10.0) -> list[Response]:
        """Read until `count` responses arrived (fewer if the server closed first)."""
        done = self._reading.done
        deadline = time.monotonic() + timeout
        while len(done) < count:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                break
            self._reading.parser.feed_data(data)
        out, done[:] = done[:count], done[count:]
        return out

    def request(
        self, method: str, target: str, headers: Mapping[str, str] | None = None
    ) -> Response:
        self.send(raw_request(method, target, headers))
        [response] = self.responses(1)
        return response

    def closed_by_server(self, timeout: float = 5.0) -> bool:
        """True once the server closed its side (after any bytes still in flight)."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        return True

    def close(self) -> None:
        self.sock.close()


def raw_request(method: str, target: str, headers: Mapping[str, str] | None = None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class HttpCheckServer:
    transport: HttpTransport
    port: int
    metrics: Metrics  # on a registry of this server's own
    cache: TokenCache

    def connect(self, timeout: float = 10.0) -> Connection:
        return Connection(self.port, timeout)

    def request(
        self, method: str, target: str, headers: Mapping[str, str] | None = None
    ) -> Response:
        """One request on a connection of its own."""
        with self.connect() as conn:
            return conn.request(method, target, headers)

    def decisions(self, reason: str) -> float:
        """authz_decisions_total for one reason, summed over decision and policy."""
        total = 0.0
        for family in self.metrics.registry.collect():
            for sample in family.samples:
                if sample.name == "authz_decisions_total" and sample.labels["reason"] == reason:
                    total += sample.value
        return total

    def queue_waits(self, longer_than: float) -> tuple[float, float]:
        """authz_check_queue_seconds{transport="http"}: (all waits, waits over
        `longer_than`, which must be a bucket bound)."""
        buckets = {}
        for family in self.metrics.registry.collect():
            for sample in family.samples:
                if sample.name == "authz_check_queue_seconds_bucket":
                    buckets[float(sample.labels["le"])] = sample.value
        return buckets[float("inf")], buckets[float("inf")] - buckets[longer_than]


@contextmanager
def http_check_server(
    serving: Serving,
    *,
    limits: HttpLimits | None = None,
    proxy_secret: bytes | None = None,
    cache: TokenCache | None = None,
    **options: Any,
) -> Iterator[HttpCheckServer]:
    """The HTTP transport over `serving`; `options` as `assembly.pipeline` takes."""
    cache = cache if cache is not None else TokenCache()
    metrics = Metrics(CollectorRegistry())
    checker = HttpChecker(
        pipeline(serving, cache, **options), Recorder(Audit(metrics)), proxy_secret
    )
    sock = listen("127.0.0.1:0")
    transport = HttpTransport(
        checker, sock, limits, queue_wait=metrics.queue_seconds.labels("http").observe
    )
    transport.start()
    try:
        yield HttpCheckServer(transport, sock.getsockname()[1], metrics, cache)
    finally:
        transport.stop(grace=2.0)
