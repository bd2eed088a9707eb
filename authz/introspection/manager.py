"""The process's introspectors, the pool their calls run on, and the cache they share.

Like the key manager, it keeps each issuer's introspector across policy rebuilds: an
unrelated edit (or a rotated client secret) keeps the cached answers and the breaker; a
different endpoint or client is a new introspector with an empty part of the cache.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable

from authz.introspection.cache import AnswerCache
from authz.introspection.introspector import (
    IntrospectionSettings,
    IntrospectionState,
    Introspector,
    PoolClosed,
)
from authz.keys.remote import WaitSlots

IDLE_SECONDS = 60.0


class CallPool:
    """At most `workers` daemon threads, started when calls queue up and leaving after
    IDLE_SECONDS without work: a hanging call never keeps the process from exiting, and an
    idle server holds no threads. Jobs catch their own errors."""

    def __init__(self, workers: int, *, idle: float = IDLE_SECONDS) -> None:
        self.workers = max(1, workers)
        self._idle_seconds = idle
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._queued = 0
        self._stopped = False

    def __call__(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._stopped:
                raise PoolClosed
            self._jobs.put(job)
            self._queued += 1
            if self._queued > self._idle and self._threads < self.workers:
                self._threads += 1
                threading.Thread(target=self._run, name="introspect", daemon=True).start()

    @property
    def threads(self) -> int:
        return self._threads

    def _run(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            try:
                job = self._jobs.get(timeout=self._idle_seconds)
            except queue.Empty:
                with self._lock:
                    self._idle -= 1
                    if self._queued == 0 or self._stopped:
                        self._threads -= 1
                        return
                continue
            with self._lock:
                self._idle -= 1
                if job is not None:
                    self._queued -= 1
            if job is None:
                with self._lock:
                    self._threads -= 1
                return
            job()

    def stop(self) -> None:
        """Refuse new calls; idle threads leave now, busy ones after their call."""
        with self._lock:
            self._stopped = True
            threads = self._threads
        for _ in range(threads):
            self._jobs.put(None)


class IntrospectionManager:
    def __init__(
        self,
        *,
        workers: int = 8,
        wait_slots: int = 4,
        cache_entries: int = 100_000,
        cache_bytes: int = 64 << 20,
    ) -> None:
        """`workers`: calls in flight at once, all issuers; `wait_slots`: request threads
        that may wait for a call past FAST_WAIT (the server gives a quarter of its handler
        threads, as for key refetches)."""
        self.cache = AnswerCache(cache_entries, cache_bytes)
        self.pool = CallPool(workers)
        self._slots = WaitSlots(wait_slots)
        self._introspectors: dict[tuple[str, str, str, str], Introspector] = {}
        self._lock = threading.Lock()

    def introspector(self, issuer_id: str, settings: IntrospectionSettings) -> Introspector:
        identity = (issuer_id, settings.endpoint, settings.auth.method, settings.auth.client_id)
        with self._lock:
            found = self._introspectors.get(identity)
            if found is not None:
                found.configure(settings)
                return found
            created = Introspector(
                issuer_id, settings, pool=self.pool, slots=self._slots, cache=self.cache
            )
            self._introspectors[identity] = created
            return created

    def retain(self, in_use: Iterable[object]) -> None:
        """Forget every introspector not in `in_use`, and its cached answers."""
        keep = {id(i) for i in in_use}
        with self._lock:
            gone = [k for k, v in self._introspectors.items() if id(v) not in keep]
            dropped = [self._introspectors.pop(k) for k in gone]
        for introspector in dropped:
            self.cache.forget(introspector.cache_owner)

    def states(self) -> list[IntrospectionState]:
        with self._lock:
            introspectors = list(self._introspectors.values())
        return sorted((i.state() for i in introspectors), key=lambda s: s.issuer)

    def close(self) -> None:
        self.pool.stop()
