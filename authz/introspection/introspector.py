"""One issuer's introspection endpoint as the request path sees it: the cache, or one
bounded call per token run elsewhere.

`lookup` answers from the cache; otherwise it joins the call already under way for that
token (single-flight) or hands a new one to the pool, unless the circuit breaker is open or
`max_in_flight` calls are out (then it refuses at once: 503). A caller that may not block
gets `Pending` (the call runs; ask again where waiting is cheap). A caller that may wait
does so for at most `wait` seconds, and past FAST_WAIT only with a long-wait slot, as for
unknown-kid key refetches: a hanging endpoint never holds the threads other requests need.

The breaker: `failure_threshold` failed calls in a row open it for `open_seconds`, during
which new tokens are refused without a call; then one call probes, and its success closes
it. Answers already cached keep serving through an outage.
"""

from __future__ import annotations

import hashlib
import ssl
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import structlog

from authz.introspection import answer
from authz.introspection.answer import AnswerError, Introspected
from authz.introspection.cache import AnswerCache
from authz.keys.client_auth import ClientAuth, ClientAuthError
from authz.keys.fetch import FetchError, post_form, tls_context
from authz.keys.remote import FAST_WAIT, WaitSlots

log = structlog.get_logger("authz.introspection")

MAX_ANSWER_BYTES = 64 * 1024  # an answer is a few hundred bytes; 64 KiB leaves room for claims


@dataclass(frozen=True, slots=True)
class IntrospectionSettings:
    """How one issuer's tokens are introspected (seconds; defaults live in the schema)."""

    endpoint: str
    auth: ClientAuth
    token_type_hint: str | None = "access_token"  # noqa: S105  (a hint name, no secret)
    cache_seconds: int = 60
    negative_cache_seconds: int = 5
    wait: float = 0.25
    timeout: float = 2.0
    max_in_flight: int = 8
    failure_threshold: int = 5
    open_seconds: int = 10
    ca_pem: str | None = None
    allow_http: bool = False
    public_only: bool = False  # refuse loopback, link-local and unspecified addresses


class Unavailable(Exception):
    """No answer can be had now (the endpoint failed, the circuit is open, too many calls
    are out, or none came in time): the request fails closed. `detail` is safe to log."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Pending(Exception):
    """The answer needs a wait and the caller may not wait. The call is under way: ask
    again where waiting is cheap, and that ask joins it."""


class PoolClosed(Exception):
    """The pool refused the call (it is shutting down)."""


Pool = Callable[[Callable[[], None]], None]  # runs the job on another thread or raises PoolClosed


@dataclass(frozen=True, slots=True)
class IntrospectionState:
    """One issuer's introspection as of now, for metrics and `authz check`."""

    issuer: str
    endpoint: str
    calls: dict[str, int]  # finished calls by result: ok, timeout, http_status, invalid, ...
    refused: dict[str, int]  # requests refused without a call: circuit_open, busy, pool
    waits_cut_short: int
    in_flight: int
    circuit_open: bool
    last_error: str | None


class Breaker:
    """Consecutive failures -> open for `open_seconds` -> one probe. Guarded by its owner."""

    def __init__(self, threshold: int, open_seconds: float) -> None:
        self.threshold = threshold
        self.open_seconds = open_seconds
        self.failures = 0
        self.open_until = 0.0
        self.probing = False

    def admit(self, now: float) -> bool:
        if self.failures < self.threshold:
            return True
        if now < self.open_until or self.probing:
            return False
        self.probing = True  # half-open: this call decides
        return True

    def succeeded(self) -> None:
        self.failures, self.probing = 0, False

    def failed(self, now: float) -> bool:
        """Record a failure; True when this one opened the circuit."""
        self.failures += 1
        self.probing = False
        if self.failures >= self.threshold:
            self.open_until = now + self.open_seconds
            return True
        return False

    def is_open(self, now: float) -> bool:
        return self.failures >= self.threshold and (now < self.open_until or self.probing)


class Introspector:
    def __init__(
        self,
        issuer_id: str,
        settings: IntrospectionSettings,
        *,
        pool: Pool,
        slots: WaitSlots,
        cache: AnswerCache,
    ) -> None:
        self.issuer_id = issuer_id
        self._pool = pool
        self._slots = slots
        self._cache = cache
        self._lock = threading.Lock()
        # Guarded by _lock:
        self._settings = settings
        self._tls = tls_context(settings.ca_pem)
        self._breaker = Breaker(settings.failure_threshold, settings.open_seconds)
        self._inflight: dict[bytes, tuple[Future[Introspected], float]] = {}
        self._calls: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()
        self._cut_short = 0
        self._last_error: str | None = None

    @property
    def settings(self) -> IntrospectionSettings:
        return self._settings

    @property
    def cache_owner(self) -> int:
        """This introspector's part of the shared cache."""
        return id(self)

    def configure(self, settings: IntrospectionSettings) -> None:
        """New settings for the same endpoint and client: cached answers stay."""
        with self._lock:
            if settings == self._settings:
                return
            self._settings = settings
            self._tls = tls_context(settings.ca_pem)
            self._breaker.threshold = settings.failure_threshold
            self._breaker.open_seconds = settings.open_seconds

    # -- the request path ------------------------------------------------------------------

    def lookup(self, token: str, *, wait: bool, now: float) -> Introspected:
        """What the issuer says about `token`; raises Unavailable, or Pending when `wait`
        is false and the answer is not cached. `now` is the request's wall clock."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        cached = self._cache.get((id(self), digest), now)
        if cached is not None:
            return cached
        with self._lock:
            flight = self._inflight.get(digest)
            if flight is None:
                # A call may have finished since the cache was read: it stores its answer
                # before it leaves the in-flight table.
                cached = self._cache.get((id(self), digest), now, count=False)
                if cached is not None:
                    return cached
                flight = self._start(token, digest, now)
        if not wait:
            raise Pending(self.issuer_id)
        return self._await(*flight)

    def _start(self, token: str, digest: bytes, now: float) -> tuple[Future[Introspected], float]:
        """Begin one call (holding _lock); raises Unavailable when none may begin."""
        settings = self._settings
        started = time.monotonic()
        if not self._breaker.admit(started):
            self._refused["circuit_open"] += 1
            retry = max(0.0, self._breaker.open_until - started)
            raise Unavailable(
                f"introspection circuit open after {self._breaker.failures} failed calls "
                f"(last: {self._last_error}); next try in {retry:.0f}s"
            )
        if len(self._inflight) >= settings.max_in_flight:
            self._refused["busy"] += 1
            self._breaker.probing = False
            raise Unavailable(f"{len(self._inflight)} introspection calls already in flight")
        future: Future[Introspected] = Future()
        try:
            self._pool(lambda: self._call(token, digest, future, now, settings))
        except PoolClosed:
            self._refused["pool"] += 1
            self._breaker.probing = False
            raise Unavailable("the introspection pool is shutting down") from None
        flight = (future, started)
        self._inflight[digest] = flight
        return flight

    def _await(self, future: Future[Introspected], started: float) -> Introspected:
        """Wait for the call within the budget; past the call's first FAST_WAIT seconds
        only with a long-wait slot."""
        budget = self._settings.wait
        end = time.monotonic() + budget
        fast_end = min(started + FAST_WAIT, end)
        try:
            return future.result(timeout=max(0.0, fast_end - time.monotonic()))
        except TimeoutError:
            pass
        if time.monotonic() >= end:
            raise Unavailable(f"no introspection answer within {budget * 1000:.0f} ms")
        if not self._slots.take():
            with self._lock:
                self._cut_short += 1
            raise Unavailable(
                f"no introspection answer within {FAST_WAIT * 1000:.0f} ms and no wait slot free"
            )
        try:
            return future.result(timeout=max(0.0, end - time.monotonic()))
        except TimeoutError:
            raise Unavailable(f"no introspection answer within {budget * 1000:.0f} ms") from None
        finally:
            self._slots.give()

    # -- the call, on the pool -------------------------------------------------------------

    def _call(
        self,
        token: str,
        digest: bytes,
        future: Future[Introspected],
        now: float,
        settings: IntrospectionSettings,
    ) -> None:
        """One POST to the endpoint; the answer is cached before the waiters are woken.
        Nothing logged here names the token."""
        try:
            result = self._ask(token, settings, self._tls)
        except FetchError as exc:
            self._failed(exc.result.value, exc.message, digest, future)
        except AnswerError as exc:
            self._failed("invalid", f"{settings.endpoint}: not an introspection answer: {exc}", digest, future)  # fmt: skip
        except ClientAuthError as exc:
            self._failed("client_auth", f"client authentication: {exc}", digest, future)
        except Exception as exc:  # a bug must fail closed and keep the pool alive
            # The frames only: an exception's message could quote what it was given.
            frames = "".join(traceback.format_tb(exc.__traceback__))[-2000:]
            log.error("introspection call crashed", issuer=self.issuer_id, frames=frames)
            self._failed("internal_error", f"internal error: {type(exc).__name__}", digest, future)
        else:
            if result.active and result.problem is None:
                deadline = now + settings.cache_seconds
                if result.expires_at is not None:
                    deadline = min(deadline, result.expires_at)
            else:
                deadline = now + settings.negative_cache_seconds
            if deadline > now:
                self._cache.put((id(self), digest), result, deadline)
            with self._lock:
                self._calls["ok"] += 1
                self._breaker.succeeded()
                self._inflight.pop(digest, None)
            future.set_result(result)

    @staticmethod
    def _ask(token: str, settings: IntrospectionSettings, tls: ssl.SSLContext) -> Introspected:
        form, headers = settings.auth.apply(settings.endpoint, time.time())
        fields = {"token": token}
        if settings.token_type_hint:
            fields["token_type_hint"] = settings.token_type_hint
        fields.update(form)
        fetched = post_form(
            settings.endpoint,
            fields,
            headers=headers,
            timeout=settings.timeout,
            tls=tls,
            allow_http=settings.allow_http,
            max_bytes=MAX_ANSWER_BYTES,
            decode=answer.decode,
            public_only=settings.public_only,
        )
        return answer.read(fetched.document)

    def _failed(
        self, result: str, message: str, digest: bytes, future: Future[Introspected]
    ) -> None:
        with self._lock:
            self._calls[result] += 1
            self._last_error = f"{result}: {message}"
            opened = self._breaker.failed(time.monotonic())
            failures = self._breaker.failures
            self._inflight.pop(digest, None)
        fields = {"issuer": self.issuer_id, "result": result, "error": message}
        if opened:
            log.error(
                "introspection failing: circuit open; new opaque tokens are refused "
                "(introspection_unavailable) until a call succeeds",
                **fields,
                failures=failures,
                open_s=self._breaker.open_seconds,
            )
        else:
            log.warning("introspection call failed", **fields, failures=failures)
        future.set_exception(Unavailable(f"introspection failed: {result}: {message}"))

    # -- state -----------------------------------------------------------------------------

    def state(self) -> IntrospectionState:
        with self._lock:
            return IntrospectionState(
                issuer=self.issuer_id,
                endpoint=self._settings.endpoint,
                calls=dict(self._calls),
                refused=dict(self._refused),
                waits_cut_short=self._cut_short,
                in_flight=len(self._inflight),
                circuit_open=self._breaker.is_open(time.monotonic()),
                last_error=self._last_error,
            )
