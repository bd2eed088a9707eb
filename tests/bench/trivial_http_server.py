"""A trivial always-allow HTTP ext_authz server: the HTTP floor authz's HTTP mode is measured against.

Envoy's `http_service` ext_authz sends the original request's method, path (after a
prefix) and allowed headers with no body, and allows it on a 200. This server answers
every request with one prebuilt `200` without looking at it, so any per-request cost
above it is the HTTP transport's own work. The stack is the one chosen by measurement
for authz's HTTP transport (see tests/bench/http_stacks.py): an `asyncio.Protocol` on
uvloop with httptools parsing HTTP/1.1 and keep-alive connections. Run it with

    python -m tests.bench.trivial_http_server --addr 127.0.0.1:9102 [--loop uvloop]

`--loop asyncio|rloop` swaps the event loop only; `--handoff executor` answers from a
thread pool via `run_in_executor` instead of inline, to price that hand-off.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import httptools

ALLOW = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
#: Bad request framing: answer and drop the connection (its byte stream is unusable).
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
LOOPS = ("uvloop", "asyncio", "rloop")
HANDOFFS = ("inline", "executor")


def decide() -> bytes:
    """The whole "decision": the prebuilt allow. A function so the executor variant
    hands exactly the same work to a thread as the inline one does on the loop."""
    return ALLOW


class AllowAll(asyncio.Protocol):
    """One HTTP/1.1 connection from Envoy: every complete request gets `ALLOW`."""

    def __init__(self, executor: ThreadPoolExecutor | None) -> None:
        self.executor = executor
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's and rloop's transports are not asyncio.Transport subclasses: no isinstance
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._reply(BAD_REQUEST, keep_alive=False)

    def on_message_complete(self) -> None:
        keep_alive = self.parser.should_keep_alive()
        if self.executor is None:
            self._reply(decide(), keep_alive)
            return
        future = asyncio.get_running_loop().run_in_executor(self.executor, decide)
        future.add_done_callback(lambda done: self._reply(done.result(), keep_alive))

    def _reply(self, response: bytes, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(response)
        if not keep_alive:
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    """A fresh event loop of the named implementation."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    if name == "rloop":
        import rloop  # type: ignore[import-not-found,import-untyped,unused-ignore]

        loop: asyncio.AbstractEventLoop = rloop.new_event_loop()
        return loop
    return asyncio.new_event_loop()


async def serve(host: str, port: int, handoff: str, threads: int) -> None:
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(threads, "decide") if handoff == "executor" else None
    factory: Callable[[], Any] = lambda: AllowAll(executor)  # noqa: E731
    server = await loop.create_server(factory, host, port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    if executor is not None:
        executor.shutdown(wait=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--addr", default="127.0.0.1:9102", help="HOST:PORT to listen on")
    parser.add_argument("--loop", choices=LOOPS, default="uvloop", help="event loop")
    parser.add_argument("--handoff", choices=HANDOFFS, default="inline")
    parser.add_argument("--threads", type=int, default=4, help="executor threads")
    args = parser.parse_args(argv)
    host, _, port = args.addr.rpartition(":")
    loop = new_loop(args.loop)
    try:
        loop.run_until_complete(serve(host, int(port), args.handoff, args.threads))
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
