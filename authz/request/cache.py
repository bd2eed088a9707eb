"""Verified-token cache: skip signature checks for tokens seen before.

Keyed on a SHA-256 of the token (the token itself is never kept), bounded LRU by entries
and by memory, an entry expires when its token would stop verifying (`exp` plus the
issuer's skew). It is not cleared when a new snapshot is swapped in: an entry counts only
while the policy trusts the very issuer object that verified it and that issuer serves
the very key set it verified against (the caller's `valid` test on every lookup; unchanged
issuers are the same objects across rebuilds), so a key rotation or an issuer edit is never
masked and costs no scan of the cache. Failures are not cached.

Memory: decoded claims cost far more than their JSON (a typical access token's ~280 bytes
of payload become ~2.7 KiB of Python objects; a 15 KB token of many small claims ~180 KiB).
So every entry is a record of the verified payload and what verified it (an `Origin`,
shared by every token of one issuer, key set and kid), and only the `hot_entries` most
recently used also keep the decoded token: a hit on those costs nothing more, a hit on any
other decodes the payload again with the parser that read it first (a few microseconds;
the signature check it saves costs 50-500 us) and makes it hot. The payload is deflated
against the first one its origin saw: tokens of one issuer repeat their claim names and
most values (iss, aud, scopes, roles), so a record keeps little more than what is this
token's own (subject, ids, times): ~90 of ~360 bytes for the bench's tokens, each with its
own user, session and jti. Both parts are measured when stored (`record_size`,
`footprint`) and their total is kept under `max_bytes`.
"""

from __future__ import annotations

import hashlib
import struct
import sys
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from authz.keys.jwk import KeySet
from authz.policy.issuer import CompiledIssuer
from authz.request.verify import VerifiedToken, restore

# A record beyond its blob: the digest (65 bytes), its OrderedDict slot, index share and
# node (~100 at 100k entries) and the (origin, blob) tuple (56). tests/unit/request/
# test_cache.py holds this against what tracemalloc sees for 20k records.
RECORD_OVERHEAD = 224
# A hot entry beyond its claims: the VerifiedToken and Identity, the (deadline, token, size)
# tuple with its float and int, and the hot OrderedDict's slot and node.
HOT_OVERHEAD = 440
HOT_ENTRIES = 1024
_ORIGINS = 1024  # distinct (issuer, key set, kid) remembered for sharing; then started over

_Context = TypeVar("_Context")
_DEADLINE = struct.Struct("<d")  # a record's blob: the deadline, then the payload


@dataclass(frozen=True, slots=True, eq=False)
class Origin:
    """What verified a cached token: the issuer object, the key set and the token's kid;
    `dictionary` (the first payload seen from them) is what its records are deflated
    against. Raw deflate: the blob never leaves this process, so it needs no checksum."""

    issuer: CompiledIssuer
    keys: KeySet | None
    kid: str | None
    dictionary: bytes

    def pack(self, payload: bytes) -> bytes:
        deflate = zlib.compressobj(
            6, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, self.dictionary
        )
        return deflate.compress(payload) + deflate.flush()

    def unpack(self, packed: bytes) -> bytes:
        inflate = zlib.decompressobj(-15, self.dictionary)
        return inflate.decompress(packed) + inflate.flush()


def record_size(blob: bytes) -> int:
    """Bytes one record holds: its blob and RECORD_OVERHEAD (the Origin and its dictionary
    are shared by all the records of one issuer, key set and kid, and not counted)."""
    return RECORD_OVERHEAD + sys.getsizeof(blob)


def footprint(verified: VerifiedToken) -> int:
    """Bytes a decoded (hot) entry holds: every object reachable from its claims (each
    counted once), the identity's scope and role tuples, the payload and HOT_OVERHEAD."""
    total = HOT_OVERHEAD + (sys.getsizeof(verified.payload) if verified.payload else 0)
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
        hot_entries: int = HOT_ENTRIES,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.hot_entries = hot_entries
        self.default_ttl = default_ttl  # for tokens without exp (requireExp: false)
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.bytes = 0
        self._records: OrderedDict[bytes, tuple[Origin, bytes]] = OrderedDict()
        self._hot: OrderedDict[bytes, tuple[float, VerifiedToken, int]] = OrderedDict()
        self._origins: dict[tuple[int, int, str | None], Origin] = {}
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
    ) -> tuple[VerifiedToken, bool] | None:
        """The cached token if it is still `valid(token, context)` for the caller, and
        whether it was hot: the very object the last hit returned. Only then is what a
        caller keeps per token object worth keeping: a cold hit's object is new, and with
        more active tokens than hot entries it is pushed out before its next use. A stale
        entry is dropped. (A function and its argument rather than a closure: no closure
        is made for every Check.)"""
        with self._lock:
            hot = self._hot.get(digest)
            if hot is not None:
                deadline, verified, _size = hot
                if now < deadline and valid(verified, context):
                    self._hot.move_to_end(digest)
                    self._records.move_to_end(digest)
                    self.hits += 1
                    return verified, True
                self._stale(digest)
                return None
            record = self._records.get(digest)
            if record is None:
                self.misses += 1
                return None
            origin, blob = record
            deadline = _DEADLINE.unpack_from(blob)[0]
            if now >= deadline:
                self._stale(digest)
                return None
            payload = origin.unpack(blob[_DEADLINE.size :])
            verified = restore(origin.issuer, origin.keys, origin.kid, payload)
            if not valid(verified, context):
                self._stale(digest)
                return None
            self._records.move_to_end(digest)
            if self.hot_entries > 0:
                self._make_hot(digest, deadline, verified, footprint(verified))
                self._shrink()
            self.hits += 1
            return verified, False

    def put(self, digest: bytes, verified: VerifiedToken, now: float) -> None:
        """Cache a token `verify` accepted (one without a payload, an introspection
        answer, is not kept here)."""
        if self.max_entries <= 0 or self.max_bytes <= 0 or verified.payload is None:
            return
        deadline = now + self.default_ttl
        if verified.expires_at is not None:
            deadline = min(deadline, verified.expires_at + verified.issuer.clock_skew)
        origin = self._origin(verified, verified.payload)
        blob = _DEADLINE.pack(deadline) + origin.pack(verified.payload)
        size = record_size(blob)
        hot_size = footprint(verified) if self.hot_entries > 0 else 0
        if size + hot_size > self.max_bytes // 8:  # one token may not push out an eighth
            return
        with self._lock:
            self._drop(digest)
            self._records[digest] = (origin, blob)
            self.bytes += size
            if hot_size:
                self._make_hot(digest, deadline, verified, hot_size)
            self._shrink()

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._hot.clear()
            self._origins.clear()
            self.bytes = 0

    def __len__(self) -> int:
        return len(self._records)

    def _origin(self, verified: VerifiedToken, payload: bytes) -> Origin:
        """One Origin per issuer object, key set and kid (the memo holds the objects, so
        their ids stay theirs while it does). Needs no lock: two threads racing for a new
        one at worst make two, and each record keeps its own."""
        key = (id(verified.issuer), id(verified.keys), verified.kid)
        origin = self._origins.get(key)
        if origin is None:
            if len(self._origins) >= _ORIGINS:
                self._origins.clear()
            kid = sys.intern(verified.kid) if verified.kid is not None else None
            fresh = Origin(verified.issuer, verified.keys, kid, payload)
            origin = self._origins.setdefault(key, fresh)
        return origin

    # -- under the lock ---------------------------------------------------------------------

    def _make_hot(self, digest: bytes, deadline: float, verified: VerifiedToken, size: int) -> None:
        self._hot[digest] = (deadline, verified, size)
        self.bytes += size
        while len(self._hot) > self.hot_entries:
            _, (_, _, cooled) = self._hot.popitem(last=False)
            self.bytes -= cooled

    def _shrink(self) -> None:
        while len(self._records) > self.max_entries or self.bytes > self.max_bytes:
            digest, (_, blob) = self._records.popitem(last=False)
            self.bytes -= record_size(blob)
            hot = self._hot.pop(digest, None)
            if hot is not None:
                self.bytes -= hot[2]
            self.evictions += 1

    def _drop(self, digest: bytes) -> None:
        record = self._records.pop(digest, None)
        if record is not None:
            self.bytes -= record_size(record[1])
        hot = self._hot.pop(digest, None)
        if hot is not None:
            self.bytes -= hot[2]

    def _stale(self, digest: bytes) -> None:
        self._drop(digest)
        self.misses += 1
