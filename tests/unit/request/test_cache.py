"""The verified-token cache is bounded by memory, not only by entries (issue 11, item 12):
a 15 KB token of many small claims holds ~100-200 KiB of Python objects, so 100k entries
could reach ~17 GiB. Each entry is measured when stored; the total stays under max_bytes.

Most entries keep only their payload, deflated (issue 14, memory target); the most recently
used also keep the decoded token. What the cache counts is held against what tracemalloc
sees it hold, for both kinds."""

from __future__ import annotations

import sys
import tracemalloc
import uuid

from authz.request.cache import TokenCache, footprint
from authz.request.verify import VerifiedToken, verify
from tests.support.tokens import NOW, claims, make_issuer, mint

ISSUER, PRIVATE = make_issuer("ES256")
ALWAYS = lambda _v, _c: True  # noqa: E731 (the caller's validity test, when nothing changed)


def verified(**extra: object) -> VerifiedToken:
    return verify(mint(PRIVATE, claims(**extra)), {ISSUER.issuer: ISSUER}, NOW)


def user_tokens(count: int) -> list[str]:
    """Tokens of one issuer as a gateway sees them: each its own user, session and jti."""
    return [
        mint(
            PRIVATE,
            claims(sub=f"user-{n:06d}", jti=str(uuid.uuid4()), sid=str(uuid.uuid4()), iat=NOW - n),
        )
        for n in range(count)
    ]


def users(count: int) -> list[VerifiedToken]:
    return [verify(t, {ISSUER.issuer: ISSUER}, NOW) for t in user_tokens(count)]


def test_footprint_is_what_the_claims_hold() -> None:
    token = mint(PRIVATE, claims(**{f"c{i}": i for i in range(1000)}))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    result = verify(token, {ISSUER.issuer: ISSUER}, NOW)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(token) < 16384 and held > 80_000  # the issue's case: tiny token, big objects
    assert 0.8 < footprint(result) / held < 1.3


def _held_by(cache: TokenCache, tokens: list[str]) -> int:
    """What verifying and caching `tokens` leaves allocated, the cache being their only
    holder (as on the request path)."""
    digests = [TokenCache.digest(t) for t in tokens]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for token, digest in zip(tokens, digests, strict=True):
        cache.put(digest, verify(token, {ISSUER.issuer: ISSUER}, NOW), NOW)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return held + sum(sys.getsizeof(d) for d in digests)  # the keys, made before tracing


def test_what_the_records_count_is_what_they_hold() -> None:
    cache = TokenCache(max_bytes=1 << 30, hot_entries=0)
    held = _held_by(cache, user_tokens(3000))
    assert len(cache) == 3000
    assert 0.8 < cache.bytes / held < 1.25


def test_what_the_hot_entries_count_is_what_they_hold() -> None:
    cache = TokenCache(max_bytes=1 << 30, hot_entries=2000)
    held = _held_by(cache, user_tokens(2000))
    assert len(cache) == 2000
    assert 0.8 < cache.bytes / held < 1.3


def test_a_record_is_a_fraction_of_the_decoded_token() -> None:
    tokens = users(1000)
    cache = TokenCache(max_bytes=1 << 30, hot_entries=0)
    for i, token in enumerate(tokens):
        cache.put(i.to_bytes(32, "big"), token, NOW)
    decoded = sum(footprint(t) for t in tokens)
    assert cache.bytes < decoded / 3


def test_a_cold_hit_is_the_token_that_was_verified() -> None:
    """A hit on a record decodes it again: the same claims, identity, expiry, issuer and
    key set, said to be a cold hit (a new object: nothing kept per object finds it); it is
    then hot, so the next hit is that very object, said to be hot (answers are memoised per
    token object)."""
    token = users(2)[1]
    cache = TokenCache(hot_entries=1)
    cache.put(b"a" * 32, token, NOW)
    cache.put(b"b" * 32, users(1)[0], NOW)  # pushes `a` out of the hot set
    cold = cache.get(b"a" * 32, NOW, ALWAYS, None)
    assert cold is not None
    again, hot = cold
    assert again is not token and not hot
    assert again == token and again.identity == token.identity
    assert again.issuer is token.issuer and again.keys is token.keys
    hit = cache.get(b"a" * 32, NOW, ALWAYS, None)
    assert hit is not None and hit[0] is again and hit[1]
    assert (cache.hits, cache.misses) == (2, 0)


def test_the_total_stays_under_the_memory_bound() -> None:
    big = verified(**{f"c{i}": i for i in range(1000)})
    cache = TokenCache(max_entries=100_000, max_bytes=10 * footprint(big))
    for i in range(50):
        cache.put(i.to_bytes(32, "big"), big, NOW)
        assert cache.bytes <= cache.max_bytes
    assert 0 < len(cache) < 50 and cache.evictions == 50 - len(cache)
    cache.clear()
    assert cache.bytes == 0


def test_the_hot_set_is_bounded_and_counted() -> None:
    tokens = users(5)
    only_records = TokenCache(hot_entries=0)
    two_hot = TokenCache(hot_entries=2)
    for i, token in enumerate(tokens):
        only_records.put(i.to_bytes(32, "big"), token, NOW)
        two_hot.put(i.to_bytes(32, "big"), token, NOW)
    hot_bytes = footprint(tokens[3]) + footprint(tokens[4])
    assert two_hot.bytes == only_records.bytes + hot_bytes
    assert len(two_hot) == 5


def test_one_token_cannot_fill_the_cache() -> None:
    big = verified(**{f"c{i}": i for i in range(1000)})
    cache = TokenCache(max_bytes=footprint(big) * 4)  # it would take a quarter: refused
    cache.put(b"x" * 32, big, NOW)
    assert len(cache) == 0 and cache.get(b"x" * 32, NOW, ALWAYS, None) is None


def test_replacing_and_expiring_entries_keeps_the_count_right() -> None:
    small = verified()
    cache = TokenCache()
    cache.put(b"a" * 32, small, NOW)
    once = cache.bytes
    cache.put(b"a" * 32, small, NOW)
    assert cache.bytes == once and len(cache) == 1
    assert cache.get(b"a" * 32, NOW + 10_000, ALWAYS, None) is None  # expired: dropped
    assert cache.bytes == 0


def test_an_expired_record_is_dropped_too() -> None:
    cache = TokenCache(hot_entries=0)
    cache.put(b"a" * 32, verified(), NOW)
    assert cache.get(b"a" * 32, NOW + 10_000, ALWAYS, None) is None
    assert (len(cache), cache.bytes, cache.misses) == (0, 0, 1)


def test_a_stale_entry_is_a_miss_and_is_dropped() -> None:
    """The caller's test (same issuer object, same key set) decides; a stale entry counts
    as a miss, not a hit, and frees its memory, whether it was hot or only a record."""
    small = verified()
    for hot_entries in (1, 0):
        cache = TokenCache(hot_entries=hot_entries)
        cache.put(b"a" * 32, small, NOW)
        hit = cache.get(b"a" * 32, NOW, ALWAYS, None)
        assert hit == (small, hot_entries > 0) and cache.hits == 1
        assert cache.get(b"a" * 32, NOW, lambda _v, _c: False, None) is None
        assert (cache.hits, cache.misses, len(cache), cache.bytes) == (1, 1, 0, 0)


def test_an_introspection_answer_is_not_kept() -> None:
    """Only tokens verified from their payload come here; one without cannot be rebuilt."""
    token = verified()
    answer = VerifiedToken(
        token.issuer, token.claims, None, token.expires_at, None, token.identity, None
    )
    cache = TokenCache()
    cache.put(b"a" * 32, answer, NOW)
    assert len(cache) == 0 and cache.bytes == 0
