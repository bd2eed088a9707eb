"""Introspection answers kept until they may no longer hold, bounded by entries and memory.

Keyed by (introspector, SHA-256 of the token): the token itself is never kept. An active
answer lives until min(its `exp`, the issuer's cacheSeconds), an inactive one for the
issuer's negativeCacheSeconds; both deadlines are set by the introspector. One cache serves
every issuer of a process, so the memory bound is the process's, whatever the issuers.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict

from authz.introspection.answer import Introspected

# The entry's own objects: OrderedDict node, key tuple, digest, entry tuple, Introspected.
ENTRY_OVERHEAD = 480
CacheKey = tuple[int, bytes]


def footprint(answer: Introspected) -> int:
    """Bytes an answer holds: every object reachable from its claims, counted once."""
    total = ENTRY_OVERHEAD
    seen: set[int] = set()
    stack: list[object] = [answer.claims]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        total += sys.getsizeof(node)
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            stack.extend(node)
    return total


class AnswerCache:
    def __init__(self, max_entries: int = 100_000, max_bytes: int = 64 << 20) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self.evictions = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[CacheKey, tuple[float, Introspected, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: CacheKey, now: float, *, count: bool = True) -> Introspected | None:
        """The answer cached for `key` and still good at `now`; `count`: it is a request's
        lookup (a hit or a miss for the metrics), not a second look by the same request."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and now >= entry[0]:
                del self._entries[key]
                self.bytes -= entry[2]
                entry = None
            if entry is None:
                self.misses += count
                return None
            self._entries.move_to_end(key)
            self.hits += count
            return entry[1]

    def put(self, key: CacheKey, answer: Introspected, deadline: float) -> None:
        if self.max_entries <= 0 or self.max_bytes <= 0:
            return
        size = footprint(answer)
        if size > self.max_bytes // 8:  # one answer may not push out an eighth of the cache
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old[2]
            self._entries[key] = (deadline, answer, size)
            self.bytes += size
            while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
                _, (_, _, evicted) = self._entries.popitem(last=False)
                self.bytes -= evicted
                self.evictions += 1

    def forget(self, owner: int) -> None:
        """Drop every answer of one introspector (it no longer serves)."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == owner]:
                self.bytes -= self._entries.pop(key)[2]

    def __len__(self) -> int:
        return len(self._entries)
