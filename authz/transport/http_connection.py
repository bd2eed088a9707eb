"""One HTTP/1.1 connection from a proxy: httptools parsing, limits, answers in request order.

The connection parses and bounds; what a request means is its `Handler`'s business (the
check server in http.py). A request over a limit is answered and its connection closed,
since the bytes after it cannot be trusted to frame requests. Reading pauses while too many
answers are owed on the connection, or while the proxy does not read what it was sent.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol, cast

import httptools

from authz.request.view import MAX_HEADER_BYTES, MAX_HEADERS, MAX_HEADERS_TOTAL, MAX_PATH
from authz.transport.dialects import ENVOY_PREFIX, plain

_BAD_REQUEST = plain(400)
_TOO_LARGE = plain(413)
MAX_TARGET = MAX_PATH + len(ENVOY_PREFIX)
# A request's head (request line and headers) may not be longer than the header limits allow.
_MAX_HEAD = MAX_HEADERS_TOTAL + MAX_TARGET + 4096


class Limits(Protocol):
    @property
    def max_connections(self) -> int: ...
    @property
    def max_pipelined(self) -> int: ...
    @property
    def max_body(self) -> int: ...
    @property
    def header_timeout(self) -> float: ...
    @property
    def idle_timeout(self) -> float: ...


class Handler(Protocol):
    """What a connection asks of its server."""

    @property
    def limits(self) -> Limits: ...
    @property
    def tick(self) -> int: ...
    @property
    def connections(self) -> set[Connection]: ...

    def handle(
        self,
        connection: Connection,
        method: str,
        target: str,
        headers: dict[str, str],
        repeated: set[str],
        *,
        keep_alive: bool,
    ) -> None:
        """Answer one complete request (now, or later through `queue`)."""

    def refuse(self, detail: str, target: str, headers: dict[str, str]) -> bytes:
        """The answer to a request over a header limit."""


class _Refused(Exception):
    """A request over a limit, answered (and the connection closed) before its end."""

    def __init__(self, detail: str | None) -> None:
        super().__init__(detail)
        self.detail = detail  # None: not a check at all (413, broken framing)


class Slot:
    """A pipelined request's place in its connection's answer order."""

    __slots__ = ("close", "data")

    def __init__(self, close: bool) -> None:
        self.data: bytes | None = None
        self.close = close


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection from a proxy. Answers go out in request order."""

    def __init__(self, server: Handler) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.pending: deque[Slot] = deque()
        self.reading = True
        self.writable = True
        self.began: int | None = None  # server tick at which the current request began
        self.idle_since = server.tick
        self.head_bytes = 0
        self.body_bytes = 0
        self.url = b""
        self.headers: dict[str, str] = {}
        self.repeated: set[str] = set()
        self.header_bytes = 0

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance
        self.transport = cast(asyncio.Transport, transport)
        if len(self.server.connections) >= self.server.limits.max_connections:
            self.transport.close()
            return
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.began is not None:
            self.head_bytes += len(data)
            if self.head_bytes > _MAX_HEAD:
                self._refuse(_Refused("request head too long"))
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            refused = exc.__context__
            self._refuse(refused if isinstance(refused, _Refused) else _Refused(None))
        except httptools.HttpParserUpgrade:
            # Answered at message complete; what follows is not HTTP/1.1 any more.
            self._close_after_pending()
        except httptools.HttpParserError:
            self._refuse(_Refused(None))

    def pause_writing(self) -> None:  # the proxy is not reading its answers: stop reading
        self.writable = False
        self._update_reading()

    def resume_writing(self) -> None:
        self.writable = True
        self._update_reading()

    # -- httptools callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.began = self.server.tick
        self.head_bytes = 0
        self.body_bytes = 0
        self.url = b""
        self.headers = {}
        self.repeated = set()
        self.header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_TARGET:
            raise _Refused("request path too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value)
        self.header_bytes += size
        if size > MAX_HEADER_BYTES:
            raise _Refused(f"header {name[:64]!r} is {size} bytes, over {MAX_HEADER_BYTES}")
        if self.header_bytes > MAX_HEADERS_TOTAL:
            raise _Refused(f"request headers are over {MAX_HEADERS_TOTAL} bytes")
        key = name.decode("latin-1").lower()
        text = value.decode("utf-8", "replace")
        headers = self.headers
        if key in headers:
            self.repeated.add(key)
            headers[key] = f"{headers[key]},{text}"
        else:
            if len(headers) >= MAX_HEADERS:
                raise _Refused(f"request has over {MAX_HEADERS} headers")
            headers[key] = text

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.body_bytes > self.server.limits.max_body:
            raise _Refused(None)

    def on_message_complete(self) -> None:
        self.began = None
        self.idle_since = self.server.tick
        parser = self.parser
        self.server.handle(
            self,
            parser.get_method().decode("latin-1"),
            self.url.decode("latin-1"),
            self.headers,
            self.repeated,
            keep_alive=parser.should_keep_alive(),
        )

    # -- answers ---------------------------------------------------------------------------------

    def send(self, data: bytes, close: bool) -> None:
        """Answer the latest request: at once, or after the answers still owed before it."""
        if self.pending:
            slot = self.queue(close)
            slot.data = data
            self.flush()
            return
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        if close:
            transport.close()

    def queue(self, close: bool) -> Slot:
        """A place for an answer that comes later; reading pauses while too many are owed."""
        slot = Slot(close)
        self.pending.append(slot)
        self._update_reading()
        return slot

    def flush(self) -> None:
        """Send the answers that are ready, in request order."""
        pending = self.pending
        transport = self.transport
        while pending and pending[0].data is not None:
            slot = pending.popleft()
            if transport is None or transport.is_closing():
                pending.clear()
                return
            transport.write(cast(bytes, slot.data))
            if slot.close:
                transport.close()
                pending.clear()
                return
        self._update_reading()

    def close_if_idle(self, tick: int) -> None:
        limits = self.server.limits
        transport = self.transport
        if transport is None:
            return
        if self.began is not None:
            if tick - self.began > limits.header_timeout:
                transport.close()  # a slow or stalled request head: no answer owed
        elif not self.pending and tick - self.idle_since > limits.idle_timeout:
            transport.close()

    def _refuse(self, refused: _Refused) -> None:
        """Answer a request that broke a limit, then close: the rest of its bytes cannot be
        parsed as requests."""
        self.began = None
        if refused.detail is None:
            too_large = self.body_bytes > self.server.limits.max_body
            data = (_TOO_LARGE if too_large else _BAD_REQUEST).wire(close=True)
        else:
            data = self.server.refuse(refused.detail, self.url.decode("latin-1"), self.headers)
        self.send(data, True)

    def _close_after_pending(self) -> None:
        if self.pending:
            self.pending[-1].close = True
            self.flush()
        elif self.transport is not None:
            self.transport.close()

    def _update_reading(self) -> None:
        transport = self.transport
        if transport is None:
            return
        wanted = self.writable and len(self.pending) < self.server.limits.max_pipelined
        if wanted != self.reading:
            self.reading = wanted
            if wanted:
                transport.resume_reading()
            else:
                transport.pause_reading()
