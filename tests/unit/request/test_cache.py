"""The verified-token cache is bounded by memory, not only by entries (issue 11, item 12):
a 15 KB token of many small claims holds ~100-200 KiB of Python objects, so 100k entries
could reach ~17 GiB. Each entry is measured when stored; the total stays under max_bytes."""

from __future__ import annotations

import tracemalloc

from authz.request.cache import TokenCache, footprint
from authz.request.verify import VerifiedToken, verify
from tests.support.tokens import NOW, claims, make_issuer, mint

ISSUER, PRIVATE = make_issuer("ES256")


def verified(**extra: object) -> VerifiedToken:
    return verify(mint(PRIVATE, claims(**extra)), {ISSUER.issuer: ISSUER}, NOW)


def test_footprint_is_what_the_claims_hold() -> None:
    token = mint(PRIVATE, claims(**{f"c{i}": i for i in range(1000)}))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    result = verify(token, {ISSUER.issuer: ISSUER}, NOW)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(token) < 16384 and held > 80_000  # the issue's case: tiny token, big objects
    assert 0.8 < footprint(result) / held < 1.3


def test_the_total_stays_under_the_memory_bound() -> None:
    big = verified(**{f"c{i}": i for i in range(1000)})
    cache = TokenCache(max_entries=100_000, max_bytes=10 * footprint(big))
    for i in range(50):
        cache.put(i.to_bytes(32, "big"), big, NOW)
        assert cache.bytes <= cache.max_bytes
    assert len(cache) == 10 and cache.evictions == 40
    cache.clear()
    assert cache.bytes == 0


def test_one_token_cannot_fill_the_cache() -> None:
    big = verified(**{f"c{i}": i for i in range(1000)})
    cache = TokenCache(max_bytes=footprint(big) * 4)  # it would take a quarter: refused
    cache.put(b"x" * 32, big, NOW)
    assert len(cache) == 0 and cache.get(b"x" * 32, NOW, lambda _v, _c: True, None) is None


def test_replacing_and_expiring_entries_keeps_the_count_right() -> None:
    small = verified()
    cache = TokenCache()
    cache.put(b"a" * 32, small, NOW)
    cache.put(b"a" * 32, small, NOW)
    assert cache.bytes == footprint(small)
    assert cache.get(b"a" * 32, NOW + 10_000, lambda _v, _c: True, None) is None  # expired: dropped
    assert cache.bytes == 0


def test_a_stale_entry_is_a_miss_and_is_dropped() -> None:
    """The caller's test (same issuer object, same key set) decides; a stale entry counts
    as a miss, not a hit, and frees its memory."""
    small = verified()
    cache = TokenCache()
    cache.put(b"a" * 32, small, NOW)
    assert cache.get(b"a" * 32, NOW, lambda _v, _c: True, None) is small and cache.hits == 1
    assert cache.get(b"a" * 32, NOW, lambda _v, _c: False, None) is None
    assert (cache.hits, cache.misses, len(cache), cache.bytes) == (1, 1, 0, 0)
