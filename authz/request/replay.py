"""DPoP replay detection: a proof's `jti` is accepted once while the proof could be accepted.

RFC 9449 section 11.1. An entry lives until its proof's `iat` plus the policy's window, so
it expires on its own once the proof could not pass the time check anyway. Entries are
keyed by a hash of the proof key's thumbprint and the `jti` (only a hash is kept): one
client cannot use up another's jti values.

`LocalReplayCache` is per process and bounded. When it is full of live entries it forgets
the oldest and from then on refuses every proof issued no later than the one forgotten
(`too_old`): a replay is never accepted, the window only narrows under load. A cache shared
by replicas (`authz.request.replay_redis`) does I/O and says so with `shared`.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Literal, Protocol

Seen = Literal["new", "replayed", "too_old"]


class ReplayUnavailable(Exception):
    """The replay cache could not answer in time: fail closed (503), never accept."""


def replay_key(jkt: str, jti: str) -> bytes:
    """128 bits of SHA-256 over the thumbprint (length-prefixed) and the jti."""
    return hashlib.sha256(f"{len(jkt)}:{jkt}{jti}".encode()).digest()[:16]


class ReplayCache(Protocol):
    @property
    def shared(self) -> bool:
        """True when answering needs I/O: an event loop must not ask (WouldWait)."""
        ...

    def first_use(self, key: bytes, iat: float, expires: float, now: float) -> Seen:
        """Record `key` until `expires` unless it is recorded already. Raises
        ReplayUnavailable when that cannot be known in time."""
        ...

    def close(self) -> None: ...


class LocalReplayCache:
    """This process's proofs, at most `max_entries` of them (~150 bytes each)."""

    shared = False

    def __init__(self, max_entries: int = 500_000) -> None:
        self.max_entries = max(1, max_entries)
        self._seen: OrderedDict[bytes, tuple[float, float]] = OrderedDict()  # -> (expires, iat)
        self._floor = float("-inf")  # proofs with iat <= this can no longer be told apart
        self._lock = threading.Lock()
        self.forgotten = 0  # live entries dropped because the cache was full

    def first_use(self, key: bytes, iat: float, expires: float, now: float) -> Seen:
        with self._lock:
            self._expire(now)
            if iat <= self._floor:
                return "too_old"
            seen = self._seen.get(key)
            if seen is not None and seen[0] > now:
                return "replayed"
            while len(self._seen) >= self.max_entries:
                _, (gone_expires, gone_iat) = self._seen.popitem(last=False)
                if gone_expires > now:
                    self._floor = max(self._floor, gone_iat)
                    self.forgotten += 1
            self._seen[key] = (expires, iat)
            return "new"

    def _expire(self, now: float) -> None:
        """Drop expired entries from the oldest end (entries expire roughly in order)."""
        seen = self._seen
        while seen:
            key = next(iter(seen))
            if seen[key][0] > now:
                return
            del seen[key]

    def close(self) -> None:
        """Nothing to release: the entries go with the process."""

    def __len__(self) -> int:
        return len(self._seen)
