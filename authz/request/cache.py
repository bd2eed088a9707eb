"""Verified-token cache: skip signature checks for tokens seen before.

Keyed on a SHA-256 of the token (the token itself is never kept), bounded LRU by entries
and by memory, an entry expires when its token would stop verifying (`exp` plus the
issuer's skew). It is not cleared when a new snapshot is swapped in: an entry counts only
while the policy trusts the very issuer object that verified it and that issuer serves
the very key set it verified against (the caller's `valid` test on every lookup; unchanged
issuers are the same objects across rebuilds), so a key rotation or an issuer edit is never
masked and costs no scan of the cache. Failures are not cached.

Memory: a token's claims cost far more in memory than on the wire (a 15 KB token of many
small claims is ~180 KiB of Python objects), so each entry is measured when it is stored
(`footprint`: the claims, the identity read from them and the entry itself) and the total
is kept under `max_bytes`.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from authz.request.verify import VerifiedToken

_Context = TypeVar("_Context")
# The entry's own objects: OrderedDict node, tuple, digest, VerifiedToken, Identity.
ENTRY_OVERHEAD = 480


def footprint(verified: VerifiedToken) -> int:
    """Bytes the cache holds for this token: every object reachable from its claims (each
    counted once), the identity's scope and role tuples, and the entry's own objects."""
    total = ENTRY_OVERHEAD
    seen: set[int] = set()
    stack: list[object] = [verified.claims, verified.identity.scopes, verified.identity.roles]
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


class TokenCache:
    def __init__(
        self,
        max_entries: int = 100_000,
        default_ttl: float = 300.0,
        *,
        max_bytes: int = 256 << 20,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.default_ttl = default_ttl  # for tokens without exp (requireExp: false)
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.bytes = 0
        self._entries: OrderedDict[bytes, tuple[float, VerifiedToken, int]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def digest(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def get(
        self,
        digest: bytes,
        now: float,
        valid: Callable[[VerifiedToken, _Context], bool],
        context: _Context,
    ) -> VerifiedToken | None:
        """The cached token if it is still `valid(token, context)` for the caller; a stale
        one is dropped. (A function and its argument rather than a closure: no closure is
        made for every Check.)"""
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                self.misses += 1
                return None
            deadline, verified, size = entry
            if now >= deadline or not valid(verified, context):
                del self._entries[digest]
                self.bytes -= size
                self.misses += 1
                return None
            self._entries.move_to_end(digest)
            self.hits += 1
            return verified

    def put(self, digest: bytes, verified: VerifiedToken, now: float) -> None:
        if self.max_entries <= 0 or self.max_bytes <= 0:
            return
        size = footprint(verified)
        if size > self.max_bytes // 8:  # one token may not push out an eighth of the cache
            return
        deadline = now + self.default_ttl
        if verified.expires_at is not None:
            deadline = min(deadline, verified.expires_at + verified.issuer.clock_skew)
        with self._lock:
            old = self._entries.pop(digest, None)
            if old is not None:
                self.bytes -= old[2]
            self._entries[digest] = (deadline, verified, size)
            self.bytes += size
            while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
                _, (_, _, evicted) = self._entries.popitem(last=False)
                self.bytes -= evicted
                self.evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)
