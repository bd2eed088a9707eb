"""The per-process DPoP replay cache and the server nonces: state a proof check keeps."""

from __future__ import annotations

import pytest

from authz.request.nonces import Nonces
from authz.request.replay import LocalReplayCache, replay_key


def test_a_jti_is_new_once_until_it_expires() -> None:
    cache = LocalReplayCache()
    key = replay_key("jkt", "jti-1")
    assert cache.first_use(key, 100, 161, now=100) == "new"
    assert cache.first_use(key, 100, 161, now=160.9) == "replayed"
    assert cache.first_use(replay_key("jkt", "jti-2"), 100, 161, now=101) == "new"
    # Expired: the proof could not pass its time check any more, the entry goes.
    assert cache.first_use(replay_key("jkt", "jti-3"), 161, 222, now=161) == "new"
    assert len(cache) == 1
    assert cache.first_use(key, 100, 161, now=161) == "new"


def test_keys_are_per_proof_key() -> None:
    assert replay_key("jkt-a", "1") != replay_key("jkt-b", "1")
    assert replay_key("a", "b\0c") != replay_key("a\0b", "c")
    assert len(replay_key("a", "x" * 10_000)) == 16  # only a short hash is kept


def test_a_full_cache_narrows_the_window_instead_of_forgetting_replays() -> None:
    cache = LocalReplayCache(max_entries=3)
    for i in range(3):
        assert cache.first_use(replay_key("k", f"j{i}"), 100 + i, 200, now=110) == "new"
    # A fourth live proof pushes out the oldest (iat 100): from now on no proof issued at
    # or before 100 is accepted, so the forgotten one cannot be replayed.
    assert cache.first_use(replay_key("k", "j3"), 105, 200, now=110) == "new"
    assert cache.forgotten == 1
    assert cache.first_use(replay_key("k", "j0"), 100, 200, now=110) == "too_old"
    assert cache.first_use(replay_key("k", "other"), 99, 200, now=110) == "too_old"
    # Proofs the cache still holds are still replays; newer ones still pass.
    assert cache.first_use(replay_key("k", "j2"), 102, 200, now=110) == "replayed"
    assert cache.first_use(replay_key("k", "j4"), 106, 200, now=110) == "new"
    assert len(cache) == 3


def test_expired_entries_do_not_narrow_the_window() -> None:
    cache = LocalReplayCache(max_entries=2)
    cache.first_use(replay_key("k", "a"), 100, 110, now=100)
    cache.first_use(replay_key("k", "b"), 100, 110, now=100)
    assert cache.first_use(replay_key("k", "c"), 200, 260, now=200) == "new"
    assert cache.forgotten == 0
    assert cache.first_use(replay_key("k", "d"), 150, 260, now=200) == "new"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_nonces_live_one_to_two_periods() -> None:
    clock = Clock(1_000.0)
    nonces = Nonces(b"s" * 32, period=60, clock=clock)
    nonce = nonces.current()
    assert nonces.valid(nonce)
    clock.now = 1_000 + 60  # the next slot: still accepted
    assert nonces.valid(nonce) and nonces.current() != nonce
    clock.now = 1_000 + 120 + 60  # two slots on: stale
    assert not nonces.valid(nonce)


def test_nonces_are_shared_by_a_secret() -> None:
    clock = Clock(5_000.0)
    ours = Nonces(b"a" * 32, clock=clock)
    replica = Nonces(b"a" * 32, clock=clock)
    other = Nonces(b"b" * 32, clock=clock)
    assert replica.valid(ours.current())
    assert not other.valid(ours.current())
    assert Nonces(clock=clock).current() != Nonces(clock=clock).current()  # random secrets


@pytest.mark.parametrize("nonce", [None, "", "x", "!!!!", "A" * 65, "\u00e9" * 10])
def test_garbage_nonces_are_invalid(nonce: str | None) -> None:
    assert not Nonces(b"a" * 32).valid(nonce)


def test_a_nonce_from_the_future_is_invalid() -> None:
    clock = Clock(10_000.0)
    nonces = Nonces(b"a" * 32, period=60, clock=clock)
    future = nonces.current()
    clock.now -= 120
    assert not nonces.valid(future)
