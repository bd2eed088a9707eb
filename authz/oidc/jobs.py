"""The I/O a Check needs but must not do itself (a code exchange, a token refresh, a
discovery fetch, a Redis read): run on a small pool, one job per key at a time.

A Check starts or joins the job for its key and waits a bounded time for it; a job's result
is kept for `keep` seconds, so a Check that stopped waiting (or an event loop that must not
wait, and checks again elsewhere) picks it up on its next look instead of repeating the I/O
(a code can be redeemed once; a refresh token may rotate). Everything is bounded: the
workers, the jobs pending, the results kept and the Checks waiting past an instant, so a
slow provider holds a few threads, never all of them.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent import futures
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

log = structlog.get_logger("authz.login")

T = TypeVar("T")


@dataclass(slots=True)
class _Entry:
    future: futures.Future[Any]
    keep: float  # seconds the result is kept once done
    finished: float | None = None  # time.monotonic() when done


class Jobs:
    def __init__(
        self,
        *,
        workers: int = 4,
        max_pending: int = 128,
        keep: float = 60.0,
        max_kept: int = 10_000,
        waiters: int = 4,
    ) -> None:
        self._pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="login")
        self._max_pending = max_pending
        self._keep = keep
        self._max_kept = max_kept
        self._waiters = threading.BoundedSemaphore(max(1, waiters))
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._pending = 0
        self._lock = threading.Lock()
        self._closed = False

    def run(
        self, key: Hashable, work: Callable[[], T], *, keep: float | None = None
    ) -> futures.Future[T] | None:
        """The job for `key`: the one running or recently finished, else `work` started now
        (its result kept `keep` seconds, default the pool's). None when too many jobs are
        pending (the caller answers "busy", fail closed)."""
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            entry = self._entries.get(key)
            if entry is not None:
                return entry.future
            if self._closed or self._pending >= self._max_pending:
                return None
            future: futures.Future[T] = self._pool.submit(work)
            entry = _Entry(future, self._keep if keep is None else keep)
            self._entries[key] = entry
            self._pending += 1
        future.add_done_callback(lambda _f: self._finished(entry))
        return future

    def spawn(self, work: Callable[[], object]) -> bool:
        """Run `work` with nobody waiting for it (a best-effort write); False when busy."""
        with self._lock:
            if self._closed or self._pending >= self._max_pending:
                return False
            self._pending += 1
        future = self._pool.submit(work)
        future.add_done_callback(self._spawned)
        return True

    def forget(self, key: Hashable) -> None:
        """Drop a finished job's result (it was used: a second use must not find it)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.finished is not None:
                del self._entries[key]

    def wait(self, future: futures.Future[T], timeout: float) -> bool:
        """Wait up to `timeout` for `future`; whether it is done. Only a few Checks may wait
        at a time: without a free slot this returns at once."""
        if future.done():
            return True
        if timeout <= 0 or not self._waiters.acquire(blocking=False):
            return False
        try:
            futures.wait([future], timeout)
        finally:
            self._waiters.release()
        return future.done()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _finished(self, entry: _Entry) -> None:
        with self._lock:
            entry.finished = time.monotonic()
            self._pending -= 1

    def _spawned(self, future: futures.Future[Any]) -> None:
        with self._lock:
            self._pending -= 1
        if not future.cancelled() and future.exception() is not None:
            log.warning("background login job failed", error=str(future.exception())[:300])

    def _expire(self, now: float) -> None:
        """Drop results kept long enough, and the oldest results past `max_kept` (with the
        lock held). Entries are in start order; pending ones are never dropped. Results
        kept longer than the pool's default wait behind younger ones until the pool's
        default has passed for those."""
        drop = []
        kept = len(self._entries) - self._pending
        for key, entry in self._entries.items():
            if entry.finished is None:
                continue
            if now - entry.finished < entry.keep and kept <= self._max_kept:
                if now - entry.finished < self._keep:
                    break
                continue
            drop.append(key)
            kept -= 1
        for key in drop:
            del self._entries[key]
