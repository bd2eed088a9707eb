"""HTTP ext_authz and forward auth (`authz serve --http-check-addr`): HTTP/1.1 in, the answer out.

An `asyncio.Protocol` on uvloop, with httptools parsing: the stack measured cheapest per
check (docs/performance.md). Each request becomes a `RequestView` by its dialect
(`dialects.py`), the pipeline decides on the event loop itself (a cache hit, or one
signature verification), the `Answer` is rendered (shared answers once), and the same
`Recorder` as gRPC writes the audit line, metrics and span.

How long checks wait before they run (`authz_check_queue_seconds{transport="http"}`): a
check that runs on the loop waits for whatever the loop is doing, which a probe samples
every `LAG_PROBE_SECONDS` as the lateness of a timer; a check that goes to the wait pool
is timed from its hand-off to its start on a pool thread.

Deciding never waits on the loop: where a check needs a bounded wait for a key fetch
running elsewhere, the pipeline raises `WouldWait` and the check runs again, waiting
allowed, on a small thread pool. Everything is bounded: connections, checks waiting on
that pool (beyond: an immediate 503 `overloaded`, as Envoy closes an abandoned check's
connection and waiting longer helps nobody), pipelined requests per connection, header
count and bytes (view.py's limits, as gRPC's), body bytes, the time to send a request's
head, and idle keep-alive time (the connection side is in http_connection.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import structlog
import uvloop

from authz.observe.recorder import Recorder
from authz.policy.snapshot import CompiledPolicy
from authz.request.decision import Decision, Reason
from authz.request.pipeline import Outcome, Pipeline, WouldWait
from authz.request.respond import Answer
from authz.request.view import RequestError, RequestView
from authz.transport.dialects import (
    PROXY_SECRET_HEADER,
    Dialect,
    Rendered,
    dialect_of,
    original_request,
    plain,
    render,
    unsupported,
)
from authz.transport.handoff import Handed
from authz.transport.http_connection import Connection, Slot
from authz.transport.sockets import address_of

log = structlog.get_logger("authz.server")

_MAX_RENDERED = 4096
LAG_PROBE_SECONDS = 0.1
_NOT_FOUND = plain(404)


@dataclass(frozen=True)
class HttpLimits:
    """Bounds of the HTTP transport. The idle timeout outlasts Envoy's upstream idle timeout
    (1 h), NGINX's `keepalive_timeout` (60 s) and Caddy's (2 min): the proxy closes an idle
    connection first, so it never sends a check on one authz is closing."""

    max_connections: int = 4096
    max_waiting: int = 64  # checks on the wait pool (running and queued)
    wait_threads: int = 8
    max_pipelined: int = 16  # unanswered requests per connection before reading pauses
    max_body: int = 64 * 1024  # checks have no body; a proxy that sends one gets it discarded
    header_timeout: float = 10.0  # from a request's first byte to its last
    idle_timeout: float = 3900.0


class ProxyNotTrusted(Exception):
    """The shared secret was missing or wrong."""


class HttpChecker:
    """One check: dialect request -> pipeline -> rendered answer. No sockets: the server
    below feeds it, and tests call it directly."""

    def __init__(
        self, pipeline: Pipeline, recorder: Recorder, proxy_secret: bytes | None = None
    ) -> None:
        self.pipeline = pipeline
        self.recorder = recorder
        self._secret = proxy_secret
        self._rendered: dict[tuple[int, Dialect], tuple[Answer, Rendered]] = {}
        self._carriable: dict[
            tuple[int, Dialect, int], tuple[Answer, CompiledPolicy | None, str | None]
        ] = {}
        pipeline.on_snapshot_change(self._carriable.clear)  # it holds policies

    def view(
        self,
        dialect: Dialect,
        method: str,
        target: str,
        headers: dict[str, str],
        repeated: set[str],
    ) -> RequestView:
        """The original request; raises RequestError or ProxyNotTrusted. The secret leaves
        `headers` here, so nothing later (audit, tracing) can see it."""
        given = headers.pop(PROXY_SECRET_HEADER, None)
        if self._secret is not None and (
            given is None
            or PROXY_SECRET_HEADER in repeated
            or not hmac.compare_digest(given.encode(), self._secret)
        ):
            raise ProxyNotTrusted
        return original_request(dialect, method, target, headers, repeated)

    def decide(
        self,
        dialect: Dialect,
        method: str,
        target: str,
        headers: dict[str, str],
        repeated: set[str],
    ) -> tuple[Answer, Outcome] | RequestView:
        """Decide on the loop; a RequestView back means the decision needs a wait."""
        try:
            view = self.view(dialect, method, target, headers, repeated)
        except RequestError as exc:
            return self.pipeline.reject(Reason.REQUEST_INVALID, str(exc))
        except ProxyNotTrusted:
            return self.pipeline.reject(Reason.PROXY_NOT_TRUSTED, "proxy secret missing or wrong")
        try:
            return self._carried(self.pipeline.check(view, may_wait=False), dialect)
        except WouldWait:
            return view
        except Exception:  # fail closed: a bug denies the request, never opens it
            log.exception("check failed; denying")
            return self.pipeline.reject(Reason.INTERNAL_ERROR, "")

    def decide_waiting(self, view: RequestView, dialect: Dialect) -> tuple[Answer, Outcome]:
        """The same check where waiting is allowed (a pool thread)."""
        try:
            return self._carried(self.pipeline.check(view), dialect)
        except Exception:
            log.exception("check failed; denying")
            return self.pipeline.reject(Reason.INTERNAL_ERROR, "")

    def _carried(self, decided: tuple[Answer, Outcome], dialect: Dialect) -> tuple[Answer, Outcome]:
        """An allow the proxy could not carry out is a denial (`unsupported` says why)."""
        answer, outcome = decided
        if not answer.allowed:
            return decided
        missing = self._unsupported(answer, dialect, outcome.policy)
        if missing is None:
            return decided
        denied = Decision(
            False, Reason.REQUEST_INVALID, missing, outcome.decision.policy, outcome.decision.rule
        )
        return self.pipeline.respond(dataclasses.replace(outcome, decision=denied))

    def _unsupported(
        self, answer: Answer, dialect: Dialect, policy: CompiledPolicy | None
    ) -> str | None:
        """`unsupported()`, a function of the answer, the dialect and the policy's identity
        headers: kept for a shared answer (its entry holds answer and policy)."""
        key = (id(answer), dialect, id(policy))
        if answer.shared:
            kept = self._carriable.get(key)
            if kept is not None and kept[0] is answer and kept[1] is policy:
                return kept[2]
        names = None  # Envoy's dialect does not need them
        if policy is not None and dialect is not Dialect.ENVOY:
            names = [spec.name for spec in policy.response.headers]
        missing = unsupported(answer, dialect, names)
        if answer.shared:
            if len(self._carriable) >= _MAX_RENDERED:
                self._carriable.clear()
            self._carriable[key] = (answer, policy, missing)
        return missing

    def overloaded(self, view: RequestView, waiting: int) -> tuple[Answer, Outcome]:
        detail = f"{waiting} checks already waiting for keys"
        return self.pipeline.respond(
            Outcome(Decision(False, Reason.OVERLOADED, detail), view, None)
        )

    def render(self, answer: Answer, dialect: Dialect) -> Rendered:
        if not answer.shared:
            return render(answer, dialect)
        # The memo holds `answer`, so its id cannot be reused while the entry lives.
        key = (id(answer), dialect)
        memo = self._rendered.get(key)
        if memo is not None and memo[0] is answer:
            return memo[1]
        rendered = render(answer, dialect)
        if len(self._rendered) >= _MAX_RENDERED:
            self._rendered.clear()
        self._rendered[key] = (answer, rendered)
        return rendered


@dataclass(frozen=True, slots=True)
class _Asked:
    """Where and how the answer to a check that waits goes."""

    connection: Connection
    slot: Slot
    dialect: Dialect
    head_only: bool
    started: float


class HttpCheckServer:
    """The connections of one event loop and what they share: checker, limits, wait pool."""

    def __init__(
        self,
        checker: HttpChecker,
        limits: HttpLimits | None = None,
        queue_wait: Callable[[float], None] | None = None,
    ) -> None:
        self.checker = checker
        self.limits = limits or HttpLimits()
        self._queue_wait = queue_wait
        self._probe_due = 0.0
        self._prober: asyncio.TimerHandle | None = None
        self.connections: set[Connection] = set()
        self.tick = 0  # seconds since start, advanced by the sweep; cheaper than a clock read
        self.waiting = 0
        self._pool = ThreadPoolExecutor(self.limits.wait_threads, thread_name_prefix="check-wait")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._handed: Handed | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self.tls: ssl.SSLContext | None = None  # HTTPS (set by HttpTransport)
        self._stopped: asyncio.Event | None = None

    # -- requests ---------------------------------------------------------------------------------

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
        started = time.perf_counter()
        head_only = method == "HEAD"
        close = not keep_alive
        dialect = dialect_of(target)
        if dialect is None:
            connection.send(_NOT_FOUND.wire(head_only=head_only, close=close), close)
            return
        checker = self.checker
        decided = checker.decide(dialect, method, target, headers, repeated)
        if isinstance(decided, RequestView):
            if self.waiting < self.limits.max_waiting:
                slot = connection.queue(close)
                self._wait(decided, _Asked(connection, slot, dialect, head_only, started))
                return
            decided = checker.overloaded(decided, self.waiting)
        answer, outcome = decided
        checker.recorder.record(outcome, time.perf_counter() - started, headers)
        rendered = checker.render(answer, dialect)
        if close or head_only:
            connection.send(rendered.wire(head_only=head_only, close=close), close)
        else:
            connection.send(rendered.data, False)

    def _wait(self, view: RequestView, asked: _Asked) -> None:
        """Decide on the pool, answer on the loop."""
        self.waiting += 1
        loop = self._loop
        assert loop is not None

        def waited(finished: Future[tuple[Answer, Outcome]]) -> None:
            try:  # on a pool thread; the loop is gone only at shutdown
                loop.call_soon_threadsafe(self._waited, asked, finished)
            except RuntimeError:
                log.warning("check finished after the HTTP transport stopped")

        checked = self._pool.submit(self._decide_waiting, view, asked.dialect, time.perf_counter())
        checked.add_done_callback(waited)

    def _decide_waiting(
        self, view: RequestView, dialect: Dialect, handed: float
    ) -> tuple[Answer, Outcome]:
        if self._queue_wait is not None:
            self._queue_wait(time.perf_counter() - handed)
        return self.checker.decide_waiting(view, dialect)

    def _waited(self, asked: _Asked, finished: Future[tuple[Answer, Outcome]]) -> None:
        self.waiting -= 1
        answer, outcome = finished.result()  # decide_waiting never raises
        checker = self.checker
        headers = outcome.request.headers if outcome.request is not None else {}
        checker.recorder.record(outcome, time.perf_counter() - asked.started, headers)
        rendered = checker.render(answer, asked.dialect)
        slot = asked.slot
        slot.data = rendered.wire(head_only=asked.head_only, close=slot.close)
        asked.connection.flush()

    def refuse(self, detail: str, target: str, headers: dict[str, str]) -> bytes:
        """A check request over a header limit: a Check that is request_invalid."""
        dialect = dialect_of(target)
        if dialect is None:
            return _NOT_FOUND.wire(close=True)
        checker = self.checker
        answer, outcome = checker.pipeline.reject(Reason.REQUEST_INVALID, detail)
        checker.recorder.record(outcome, 0.0, headers)
        return checker.render(answer, dialect).wire(close=True)

    # -- lifecycle --------------------------------------------------------------------------------

    async def serve(
        self, source: socket.socket | Handed, ready: Callable[[], None] = lambda: None
    ) -> None:
        """Accept on `source` (bound and listening), or serve the connections the
        `--workers` supervisor hands over, until `drain()` has finished."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stopped = asyncio.Event()
        if isinstance(source, Handed):
            self._handed = source
            loop.add_reader(source.pair.fileno(), self._take_handed)
            source.announce_ready()
        else:
            self._server = await loop.create_server(
                lambda: Connection(self), sock=source, ssl=self.tls
            )
        self._sweeper = loop.call_later(1.0, self._sweep)
        if self._queue_wait is not None:
            self._probe_due = loop.time() + LAG_PROBE_SECONDS
            self._prober = loop.call_at(self._probe_due, self._probe)
        ready()
        await self._stopped.wait()

    def _take_handed(self) -> None:
        assert self._loop is not None and self._handed is not None
        taken, closed = self._handed.receive()
        if closed:  # the supervisor is gone or stopping: no more connections come
            self._loop.remove_reader(self._handed.pair.fileno())
        for sock in taken:
            self._loop.create_task(self._adopt(sock))

    async def _adopt(self, sock: socket.socket) -> None:
        assert self._loop is not None
        try:
            await self._loop.connect_accepted_socket(lambda: Connection(self), sock, ssl=self.tls)
        except OSError:  # the proxy closed it in the meantime
            sock.close()

    def _sweep(self) -> None:
        self.tick += 1
        for connection in list(self.connections):
            connection.close_if_idle(self.tick)
        assert self._loop is not None
        self._sweeper = self._loop.call_later(1.0, self._sweep)

    def _probe(self) -> None:
        """How late this timer ran is how long a check arriving at its due time waited."""
        assert self._loop is not None and self._queue_wait is not None
        now = self._loop.time()
        self._queue_wait(max(0.0, now - self._probe_due))
        self._probe_due = now + LAG_PROBE_SECONDS
        self._prober = self._loop.call_at(self._probe_due, self._probe)

    async def drain(self, grace: float) -> None:
        """Stop accepting, let answers owed go out (at most `grace` seconds), close the rest."""
        if self._server is not None:
            self._server.close()
        if self._handed is not None and self._loop is not None:
            self._loop.remove_reader(self._handed.pair.fileno())
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (
            self.waiting or any(c.pending or c.began is not None for c in self.connections)
        ):
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._prober is not None:
            self._prober.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._stopped is not None:
            self._stopped.set()


class HttpTransport:
    """The HTTP check server on an event loop thread of its own, for the wiring (server.py)."""

    def __init__(
        self,
        checker: HttpChecker,
        source: socket.socket | Handed,
        limits: HttpLimits | None = None,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop,
        *,
        tls: ssl.SSLContext | None = None,
        queue_wait: Callable[[float], None] | None = None,
    ) -> None:
        """`source`: a listening socket, or (a `--workers` worker) the connections its
        supervisor hands over. `tls`: serve HTTPS with this context (authz.tls: reloaded on
        rotation). `queue_wait` is told how long checks wait before they run."""
        self.server = HttpCheckServer(checker, limits, queue_wait)
        self.server.tls = tls
        self.source = source
        self.address = source.address if isinstance(source, Handed) else address_of(source)
        self._loop = loop_factory()
        self._thread = threading.Thread(target=self._run, name="http-check", daemon=True)
        self._started = threading.Event()
        self._failed: BaseException | None = None

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self.server.serve(self.source, self._started.set))
        except BaseException as exc:
            self._failed = exc
            self._started.set()
            raise
        finally:
            loop.close()

    def start(self) -> None:
        """Serve on the loop thread; returns once accepting (raises if it could not)."""
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the HTTP check loop did not start in 10 s")
        if self._failed is not None:
            raise RuntimeError(f"the HTTP check server failed: {self._failed}") from self._failed

    def stop(self, grace: float) -> None:
        """Drain (HttpCheckServer.drain), then end the loop thread."""
        if self._thread.is_alive():
            drained = asyncio.run_coroutine_threadsafe(self.server.drain(grace), self._loop)
            drained.result(grace + 10)
            self._thread.join(10)
        if isinstance(self.source, Handed):
            self.source.pair.close()
        else:
            self.source.close()
