"""The DPoP replay cache shared by replicas, in Redis: `SET key 1 NX PX ttl`.

The first replica to write a proof's key wins; every later sight, on any replica, is a
replay until the key expires on its own (when the proof could no longer pass its time
check). Redis is I/O, so the request path never talks to it: a small pool of threads does,
and a Check waits for the answer at most `timeout` seconds. At most `max_pending` writes are
in flight (abandoned ones included), and after `breaker_failures` failures in a row Redis
is not asked for `breaker_seconds`: a slow or dead Redis costs each Check at most the
timeout, never a blocked worker, and every Check it cannot answer fails closed (503).
The Redis URL may carry a password: it is never logged.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from authz.request.replay import ReplayUnavailable, Seen

KEY_PREFIX = b"authz:dpop:"


class RedisReplayCache:
    shared = True

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.05,
        max_pending: int = 64,
        threads: int = 4,
        breaker_failures: int = 5,
        breaker_seconds: float = 1.0,
        client: Any = None,
    ) -> None:
        self.timeout = timeout
        socket_timeout = max(0.25, 4 * timeout)  # frees a pool thread soon after a hang
        self._client = client or redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 0),
            max_connections=threads,
        )
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="dpop-replay")
        self._pending = threading.BoundedSemaphore(max_pending)
        self._breaker_failures = breaker_failures
        self._breaker_seconds = breaker_seconds
        self._lock = threading.Lock()
        self._failures = 0  # in a row
        self._open_until = 0.0  # time.monotonic() before which Redis is not asked
        self.unavailable = 0  # answers that failed closed

    def first_use(self, key: bytes, iat: float, expires: float, now: float) -> Seen:
        ttl_ms = max(1, math.ceil((expires - now) * 1000))
        if time.monotonic() < self._open_until:
            self._refuse()
            raise ReplayUnavailable("the replay cache (Redis) is failing; not asked for now")
        if not self._pending.acquire(blocking=False):
            self._refuse()
            raise ReplayUnavailable("too many replay checks waiting for Redis")
        try:
            future = self._pool.submit(self._set, KEY_PREFIX + key.hex().encode(), ttl_ms)
        except RuntimeError:  # the pool is shut down
            self._pending.release()
            self._refuse()
            raise ReplayUnavailable("the replay cache is closed") from None
        future.add_done_callback(lambda _f: self._pending.release())
        try:
            stored = future.result(timeout=self.timeout)
        except FutureTimeout:
            self._failed()
            raise ReplayUnavailable(
                f"Redis did not answer within {self.timeout * 1000:.0f} ms"
            ) from None
        except (redis.RedisError, OSError) as exc:
            self._failed()
            raise ReplayUnavailable(f"Redis failed: {type(exc).__name__}") from None
        with self._lock:
            self._failures = 0
        return "new" if stored else "replayed"

    def _set(self, name: bytes, ttl_ms: int) -> bool:
        # redis-py answers a SET NX that did not set the key with None.
        return self._client.set(name, b"1", nx=True, px=ttl_ms) is True

    def _failed(self) -> None:
        with self._lock:
            self._failures += 1
            self.unavailable += 1
            if self._failures >= self._breaker_failures:
                self._open_until = time.monotonic() + self._breaker_seconds

    def _refuse(self) -> None:
        with self._lock:
            self.unavailable += 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()
