"""Verified-token cache: skip signature checks for tokens seen before.

Keyed on a SHA-256 of the token (the token itself is never kept), bounded
LRU, an entry expires when its token would stop verifying (`exp` plus the
issuer's skew), and the cache is cleared whenever a new snapshot is swapped in.
An entry counts only while its issuer still serves the very key set it verified
against (checked on every hit, see credentials.bearer_jwt), so a key rotation is
never masked and costs no scan of the cache. Failures are not cached.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

from authz.request.verify import VerifiedToken


class TokenCache:
    def __init__(self, max_entries: int = 100_000, default_ttl: float = 300.0) -> None:
        self.max_entries = max_entries
        self.default_ttl = default_ttl  # for tokens without exp (requireExp: false)
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self._entries: OrderedDict[bytes, tuple[float, VerifiedToken]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def digest(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def get(self, digest: bytes, now: float) -> VerifiedToken | None:
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                self.misses += 1
                return None
            deadline, verified = entry
            if now >= deadline:
                del self._entries[digest]
                self.misses += 1
                return None
            self._entries.move_to_end(digest)
            self.hits += 1
            return verified

    def put(self, digest: bytes, verified: VerifiedToken, now: float) -> None:
        if self.max_entries <= 0:
            return
        deadline = now + self.default_ttl
        if verified.expires_at is not None:
            deadline = min(deadline, verified.expires_at + verified.issuer.clock_skew)
        with self._lock:
            self._entries[digest] = (deadline, verified)
            self._entries.move_to_end(digest)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
                self.evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
