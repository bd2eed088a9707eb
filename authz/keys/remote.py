"""Remote issuer keys: sets fetched and refreshed off the request path.

Each remote source has one daemon thread that fetches on a schedule (the configured
interval, or the server's max-age within bounds) and when a request met an unknown
kid. The Check path reads `current()` (one attribute read, no lock) and, only on a
miss, may join a single-flight refetch for at most the configured wait budget.
Unknown-kid refetches are limited to one per cooldown and a (kid, alg) still missing
afterwards is negative-cached until the next scheduled refresh, so a flood of
made-up kids costs at most one fetch per cooldown: no blocking refetch per unknown
kid as in PyJWT's client, no refetch without a cooldown as in go-oidc. A failed
refresh keeps the last good keys for up to `max_stale` seconds.

Everything the product shows about keys (`authz check`, metrics, CRD status) comes
from `state()`, one immutable KeyState per issuer.
"""

from __future__ import annotations

import dataclasses
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from authz.keys import fetch
from authz.keys.fetch import FetchError, FetchResult
from authz.keys.jwk import KeySet
from authz.keys.provider import SYSTEM_CLOCK, Clock, KeyState
from authz.keys.sources import (
    FetchSettings,
    RemoteSource,
    jwks_uri_from_discovery,
    parse_remote,
)

log = structlog.get_logger("authz.keys")

# Bounds on attacker-chosen (kid, alg) pairs remembered between refreshes.
MAX_PENDING = 256
MAX_NEGATIVE = 4096
# Unknown-kid waits: any number of requests may wait for a refetch during its first
# FAST_WAIT seconds (a healthy one is done by then: a rotation's first tokens all pass);
# past that a request waits only with a long-wait slot, so a slow or hanging key server
# never holds more than a few of the threads other requests need, whatever the rate of
# requests naming unknown kids.
FAST_WAIT = 0.1
SLOTS_PER_ISSUER = 2


class WaitSlots:
    """The long-wait slots of a whole process (all issuers): a bounded number of request
    threads may wait for key refetches past FAST_WAIT."""

    def __init__(self, total: int) -> None:
        self._free = threading.BoundedSemaphore(max(1, total))

    def take(self) -> bool:
        return self._free.acquire(blocking=False)

    def give(self) -> None:
        self._free.release()


KidAlg = tuple[str | None, str]


@dataclass(frozen=True, slots=True)
class _Loaded:
    keys: KeySet
    warnings: tuple[str, ...]
    max_age: int | None
    jwks_uri: str | None


class RemoteKeys:
    """An issuer's remotely fetched keys, their refresh thread and their state."""

    def __init__(
        self,
        issuer_id: str,
        source: RemoteSource,
        settings: FetchSettings,
        *,
        clock: Clock = SYSTEM_CLOCK,
        slots: WaitSlots | None = None,
    ) -> None:
        self.issuer_id = issuer_id
        self.source = source
        self._clock = clock
        self._slots = slots if slots is not None else WaitSlots(SLOTS_PER_ISSUER)
        self._long_waiters = 0  # guarded by _cond
        self._asked_at = 0.0  # time.monotonic() the current unknown-kid refetch was asked for
        self._keys = KeySet.empty()  # replaced whole, read without the lock
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        # Everything below is guarded by _cond.
        self._settings = settings
        self._tls = fetch.tls_context(settings.ca_pem)
        self._stopped = False
        self._fetching = False
        self._wanted = False  # an unknown kid asked for a refetch the thread has not begun
        self._attempts = 0  # finished refresh attempts; waiters watch it advance
        self._due = clock.monotonic()  # next scheduled refresh (monotonic)
        self._due_wall = clock.wall()
        self._failures = 0
        self._loaded_at: float | None = None  # monotonic, last successful refresh
        self._last_unknown: float | None = None  # monotonic, last unknown-kid refetch
        self._pending: set[KidAlg] = set()  # missed (kid, alg) waiting for the next fetch
        self._negative: set[KidAlg] = set()  # missed again after a fetch that looked for them
        self._jwks_uri: str | None = None  # discovery result, reused by unknown-kid refetches
        self._state = KeyState(source.describe())
        self._fetches: Counter[str] = Counter()
        self._unknown_refetches = 0
        self._slots_refused = 0  # waits cut short: no long-wait slot was free

    @property
    def settings(self) -> FetchSettings:
        return self._settings

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"keys {self.issuer_id}", daemon=True
        )
        self._thread.start()

    def stop(self, join: float = 0.0) -> None:
        """Stop refreshing; a fetch in flight finishes (bounded by its timeout) and is dropped."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if join and self._thread is not None:
            self._thread.join(join)

    def configure(self, settings: FetchSettings) -> None:
        """New fetch settings for the same source: the keys stay, the schedule follows."""
        with self._cond:
            if settings == self._settings:
                return
            self._settings = settings
            self._tls = fetch.tls_context(settings.ca_pem)
            if self._loaded_at is not None:
                self._schedule(min(self._due, self._loaded_at + settings.refresh))
            self._cond.notify_all()

    def wait_attempted(self, timeout: float) -> bool:
        """Block until the first refresh attempt finished (for `authz check`)."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._attempts == 0:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    # -- the request path --------------------------------------------------------------------

    def current(self) -> KeySet:
        return self._keys

    def await_refresh(self, kid: str | None, alg: str, *, wait: bool = True) -> KeySet | None:
        """A token named a key we lack: join or start a single-flight refetch, wait a bit.

        Starts a refetch only if none is under way, keys are loaded (an issuer without
        keys is retried by its thread anyway) and the cooldown since the last unknown-kid
        refetch has passed. Waits at most the wait budget, and past FAST_WAIT only with a
        long-wait slot (SLOTS_PER_ISSUER per issuer, and the process-wide slots): without
        one it gives up and the request is denied (key_not_found). With `wait=False` it
        returns None instead of waiting when the refetch could bring the key.
        """
        wanted = (kid, alg)
        started = False
        with self._cond:
            if wanted in self._negative:
                return self._keys
            if not (self._fetching or self._wanted):
                now = self._clock.monotonic()
                cooling = (
                    self._last_unknown is not None
                    and now - self._last_unknown < self._settings.cooldown
                )
                if not self._keys.keys or cooling or self._stopped:
                    return self._keys
                self._last_unknown = now
                self._asked_at = time.monotonic()
                self._wanted = started = True
                self._unknown_refetches += 1
                self._cond.notify_all()
            if len(self._pending) < MAX_PENDING:
                self._pending.add(wanted)
            if wait:
                self._wait_for_attempt(self._attempts + 1)
        if started:
            log.info("unknown kid: refetching issuer keys", issuer=self.issuer_id, kid=_clip(kid))
        return self._keys if wait else None

    def _wait_for_attempt(self, target: int) -> None:
        """Wait (holding _cond) until refresh attempt `target` finished, within the budget;
        past the refetch's first FAST_WAIT seconds only with a long-wait slot."""
        end = time.monotonic() + self._settings.wait  # a real wait, whatever the clock
        fast_end = self._asked_at + FAST_WAIT
        slot = False
        try:
            while self._attempts < target:
                now = time.monotonic()
                if now >= end:
                    return
                if now >= fast_end and not slot:
                    if self._long_waiters >= SLOTS_PER_ISSUER or not self._slots.take():
                        self._slots_refused += 1
                        return
                    slot = True
                    self._long_waiters += 1
                self._cond.wait(min(end, fast_end) - now if not slot else end - now)
        finally:
            if slot:
                self._long_waiters -= 1
                self._slots.give()

    # -- state ---------------------------------------------------------------------------------

    def state(self) -> KeyState:
        with self._cond:
            return dataclasses.replace(
                self._state,
                next_refresh=None if self._stopped else self._due_wall,
                fetches=dict(self._fetches),
                unknown_kid_refetches=self._unknown_refetches,
                waits_cut_short=self._slots_refused,
            )

    def _schedule(self, due: float) -> None:
        """Set the next scheduled refresh (monotonic), and its wall time for the state."""
        self._due = due
        self._due_wall = self._clock.wall() + (due - self._clock.monotonic())

    # -- refreshing ----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while (
                    not self._stopped
                    and not self._wanted
                    and (wait := self._due - self._clock.monotonic()) > 0
                ):
                    self._cond.wait(wait)
                if self._stopped:
                    return
                scheduled = self._clock.monotonic() >= self._due
            self.refresh(scheduled=scheduled)

    def refresh(self, *, scheduled: bool = True) -> None:
        """One fetch and everything that follows from it; run by the refresh thread only.

        A scheduled refresh re-runs discovery and forgets negative-cached kids; an
        unknown-kid refetch reuses the discovered JWKS URI.
        """
        with self._cond:
            if not self._wanted:  # a scheduled refresh: waiters that join it time from now
                self._asked_at = time.monotonic()
            self._fetching, self._wanted = True, False
            looked_for, self._pending = self._pending, set()
            settings, tls = self._settings, self._tls
            jwks_uri = None if scheduled else self._jwks_uri
        attempted = self._clock.wall()
        try:
            loaded: _Loaded | FetchError = self._load(settings, tls, jwks_uri)
        except FetchError as exc:
            loaded = exc
        except Exception as exc:  # a bug must not end refreshing: record it and retry
            log.exception("issuer key refresh crashed", issuer=self.issuer_id)
            loaded = FetchError(FetchResult.INVALID, f"internal error: {exc!r}")
        with self._cond:
            if self._stopped:
                self._fetching = False
                self._attempts += 1
                self._cond.notify_all()
                return
            before = self._keys
            old_state = self._state
            if isinstance(loaded, _Loaded):
                self._apply(loaded, looked_for, scheduled, attempted)
            else:
                self._fail(loaded, looked_for, attempted)
            self._fetching = False
            self._attempts += 1
            self._cond.notify_all()
            after, state = self._keys, self._state
            retry = self._due - self._clock.monotonic()
        self._report(before, after, old_state, state, retry)

    def _load(self, settings: FetchSettings, tls: ssl.SSLContext, jwks_uri: str | None) -> _Loaded:
        """Fetch (discovery, then) the key document and parse it; raises FetchError."""
        source = self.source
        url = source.url
        if source.kind == "discovery":
            if jwks_uri is None:
                doc = self._get(source.url, settings, tls).document
                jwks_uri = jwks_uri_from_discovery(doc, source.issuer, settings.allow_http)
            url = jwks_uri
        fetched = self._get(url, settings, tls)
        keys, warnings = parse_remote(source.kind, fetched.document, source.algorithms)
        return _Loaded(keys, tuple(warnings), fetched.max_age, jwks_uri)

    @staticmethod
    def _get(url: str, settings: FetchSettings, tls: ssl.SSLContext) -> fetch.Fetched:
        return fetch.get_json(
            url,
            timeout=settings.timeout,
            tls=tls,
            allow_http=settings.allow_http,
            public_only=settings.public_only,
        )

    def _apply(
        self, loaded: _Loaded, looked_for: set[KidAlg], scheduled: bool, attempted: float
    ) -> None:
        now = self._clock.monotonic()
        # An unchanged set keeps its identity: cached tokens are valid only while the set
        # they verified against is `current()`, so a routine refresh must not void them.
        keys = self._keys if loaded.keys == self._keys else loaded.keys
        self._keys = keys
        self._jwks_uri = loaded.jwks_uri
        self._failures = 0
        self._loaded_at = now
        self._schedule(now + self._settings.refresh_after(loaded.max_age))
        still_missing = {(kid, alg) for kid, alg in looked_for if not keys.candidates(kid, alg)}
        negative = set() if scheduled else self._negative
        if len(negative) + len(still_missing) <= MAX_NEGATIVE:
            negative |= still_missing
        self._negative = negative
        self._fetches[FetchResult.OK] += 1
        self._state = KeyState(
            self.source.describe(),
            keys.kids,
            len(keys.keys),
            last_refresh=attempted,
            last_attempt=attempted,
            warnings=loaded.warnings,
        )

    def _fail(self, error: FetchError, looked_for: set[KidAlg], attempted: float) -> None:
        now = self._clock.monotonic()
        self._failures += 1
        self._jwks_uri = None  # rediscover next time: the JWKS may have moved
        self._pending |= set(list(looked_for)[: MAX_PENDING - len(self._pending)])
        due = now + self._settings.retry_after(self._failures)
        if self._loaded_at is not None and self._keys.keys:
            expires = self._loaded_at + self._settings.max_stale
            if now >= expires:
                self._keys = KeySet.empty()
            else:
                due = min(due, expires)
        self._schedule(due)
        self._fetches[error.result] += 1
        old = self._state
        self._state = KeyState(
            old.source,
            self._keys.kids,
            len(self._keys.keys),
            last_refresh=old.last_refresh,
            last_attempt=attempted,
            last_error=f"{error.result}: {error.message}",
            stale=bool(self._keys.keys),
            warnings=old.warnings,
        )

    def _report(
        self, before: KeySet, after: KeySet, old: KeyState, new: KeyState, retry: float
    ) -> None:
        """Logs for operators: what changed, what failed and what that means for requests."""
        fields: dict[str, Any] = {"issuer": self.issuer_id, "source": new.source}
        if new.last_error is None:
            if not after.keys:
                log.error(
                    "issuer publishes no usable key: its tokens are denied (keys_unavailable)",
                    **fields,
                    warnings=list(new.warnings),
                )
                return
            if after != before:
                log.info(
                    "issuer keys loaded",
                    **fields,
                    kids=list(after.kids),
                    added=sorted(set(after.kids) - set(before.kids)),
                    removed=sorted(set(before.kids) - set(after.kids)),
                    next_refresh_s=round(retry),
                )
            if new.warnings and new.warnings != old.warnings:
                log.warning(
                    "issuer key document has unusable keys", **fields, warnings=list(new.warnings)
                )
            return
        fields.update(error=new.last_error, retry_s=round(retry))
        if after.keys:
            log.warning("issuer key refresh failed; serving the last good keys", **fields)
        elif before.keys:
            log.error(
                "issuer keys expired: no successful refresh within maxStaleSeconds; "
                "this issuer's tokens are denied (keys_unavailable)",
                **fields,
            )
        else:
            log.error(
                "issuer keys unavailable: this issuer's tokens are denied (keys_unavailable)",
                **fields,
            )


def _clip(kid: str | None) -> str | None:
    return None if kid is None else kid[:64]


class KeyManager:
    """Owns the remote key sources: one per (issuer object, source), kept across rebuilds.

    The policy store asks for a source on every rebuild; an unchanged source comes
    back as the same object with its keys and thread, so an unrelated policy edit
    never refetches. Sources no longer used are stopped by `retain`.
    """

    def __init__(self, *, start: bool = True, wait_slots: int = 4) -> None:
        """`wait_slots`: how many request threads, across all issuers, may wait for a key
        refetch past FAST_WAIT (the server gives a quarter of its handler threads)."""
        self._start = start  # False: describe sources without fetching (`authz lint`)
        self._slots = WaitSlots(wait_slots)
        self._sources: dict[tuple[str, RemoteSource], RemoteKeys] = {}
        self._lock = threading.Lock()

    def remote(self, issuer_id: str, source: RemoteSource, settings: FetchSettings) -> RemoteKeys:
        with self._lock:
            keys = self._sources.get((issuer_id, source))
            if keys is not None:
                keys.configure(settings)
                return keys
            keys = RemoteKeys(issuer_id, source, settings, slots=self._slots)
            self._sources[(issuer_id, source)] = keys
        if self._start:
            keys.start()
        return keys

    def retain(self, in_use: Iterable[object]) -> None:
        """Stop every source not in `in_use` (the providers of the issuers now serving)."""
        keep = {id(p) for p in in_use}
        with self._lock:
            gone = [k for k, v in self._sources.items() if id(v) not in keep]
            stopped = [self._sources.pop(k) for k in gone]
        for keys in stopped:
            keys.stop()

    def wait_attempted(self, timeout: float) -> bool:
        """Wait until every source finished its first fetch (or `timeout` passed)."""
        end = time.monotonic() + timeout
        with self._lock:
            sources = list(self._sources.values())
        return all(s.wait_attempted(max(0.0, end - time.monotonic())) for s in sources)

    def close(self, join: float = 1.0) -> None:
        with self._lock:
            sources = list(self._sources.values())
            self._sources.clear()
        for keys in sources:
            keys.stop()
        for keys in sources:
            keys.stop(join)
