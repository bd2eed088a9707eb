"""The key manager's decisions: schedule, stale-if-error, single flight, cooldown, state.

Most tests drive `refresh()` by hand under an injected clock against a real local
key server, so time-based rules are checked without sleeping; the threaded ones
use the real clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from authz.keys.jwk import KeySet, parse_jwks
from authz.keys.provider import Clock, KeyState, StaticKeys
from authz.keys.remote import KeyManager, RemoteKeys
from authz.keys.sources import RemoteSource
from authz.policy.issuer import CompiledIssuer
from authz.request.decision import Reason
from authz.request.jose import TokenError
from authz.request.verify import verify
from tests.support.keyserver import KeyServer, fetch_settings, self_signed_cert_pem
from tests.support.tokens import ISSUER, NOW, claims, mint, signing_key

ES = frozenset({"ES256"})
ID = "JWTIssuer/default/idp"


class FakeClock:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.now = float(NOW)

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.now += seconds

    @property
    def clock(self) -> Clock:
        return Clock(monotonic=lambda: self.mono, wall=lambda: self.now)


def jwks(*kids: str) -> dict[str, Any]:
    return {"keys": [signing_key("ES256", kid)[1] for kid in kids]}


@pytest.fixture
def server() -> Iterator[KeyServer]:
    with KeyServer() as srv:
        srv.json("/jwks", jwks("k1"))
        yield srv


@pytest.fixture
def fake() -> FakeClock:
    return FakeClock()


def remote(
    server: KeyServer,
    fake: FakeClock | None = None,
    kind: str = "jwksUri",
    path: str = "/jwks",
    **settings: Any,
) -> RemoteKeys:
    settings.setdefault("wait", 0)  # no refresh thread here: never wait for one
    source = RemoteSource(kind, f"{server.url}{path}", ISSUER, ES)  # type: ignore[arg-type]
    return RemoteKeys(
        ID,
        source,
        fetch_settings(**settings),
        clock=fake.clock if fake else Clock(),
    )


def test_a_refresh_loads_keys_and_schedules_the_next(server: KeyServer, fake: FakeClock) -> None:
    keys = remote(server, fake)
    assert keys.current().keys == () and not keys.state().ready
    keys.refresh()
    state = keys.state()
    assert keys.current().kids == ("k1",)
    assert (state.kids, state.count, state.ready, state.stale) == (("k1",), 1, True, False)
    assert state.last_refresh == state.last_attempt == fake.now
    assert state.next_refresh == fake.now + 600
    assert state.fetches == {"ok": 1} and state.last_error is None


@pytest.mark.parametrize(("max_age", "after"), [(5, 60), (900, 900), (10**6, 3600)])
def test_max_age_is_honoured_within_bounds(
    server: KeyServer, fake: FakeClock, max_age: int, after: int
) -> None:
    server.json("/jwks", jwks("k1"), cache_control=f"public, max-age={max_age}")
    keys = remote(server, fake)
    keys.refresh()
    assert keys.state().next_refresh == fake.now + after


def test_failed_refreshes_keep_the_last_good_keys_until_max_stale(
    server: KeyServer, fake: FakeClock
) -> None:
    keys = remote(server, fake, max_stale=3600)
    keys.refresh()
    loaded = keys.current()
    server.fault("/jwks", status=503)
    retries = []
    for _ in range(4):
        fake.advance(60)
        keys.refresh()
        state = keys.state()
        assert keys.current() is loaded and state.stale and state.ready
        assert state.last_error is not None and state.last_error.startswith("http_status: ")
        retries.append(state.next_refresh - fake.now)  # type: ignore[operator]
    assert retries == [1, 2, 4, 8]
    assert keys.state().last_refresh == fake.now - 240
    fake.advance(3600 - 240 - 1)  # a second before the keys expire: the retry comes no later
    keys.refresh()
    assert keys.state().next_refresh == fake.now + 1 and keys.current() is loaded
    fake.advance(1)
    keys.refresh()
    state = keys.state()
    assert keys.current().keys == () and not state.ready and not state.stale
    assert state.fetches == {"ok": 1, "http_status": 6}
    server.json("/jwks", jwks("k1"))
    keys.refresh()
    assert keys.state().ready and keys.state().last_error is None


def test_an_issuer_that_never_loaded_keys_denies_with_keys_unavailable(
    server: KeyServer, fake: FakeClock
) -> None:
    server.down()
    keys = remote(server, fake)
    keys.refresh()
    state = keys.state()
    assert not state.ready and state.last_refresh is None
    assert state.last_error is not None and state.last_error.startswith("connect_error: ")
    issuer = CompiledIssuer(id=ID, issuer=ISSUER, keys=keys, algorithms=ES)
    with pytest.raises(TokenError) as info:
        verify(mint(signing_key("ES256", "k1")[0], claims()), {ISSUER: issuer}, NOW)
    assert info.value.reason == Reason.KEYS_UNAVAILABLE
    assert "connect_error" in info.value.detail
    assert keys.state().unknown_kid_refetches == 0  # the refresh thread retries, not requests


def test_unchanged_keys_are_not_a_change(server: KeyServer, fake: FakeClock) -> None:
    """An unchanged set keeps its identity: tokens cached against it stay valid."""
    keys = remote(server, fake)
    keys.refresh()
    first = keys.current()
    keys.refresh()
    assert keys.current() is first
    server.json("/jwks", jwks("k1", "k2"))
    keys.refresh()
    assert keys.current() is not first and keys.current().kids == ("k1", "k2")


def test_unknown_kids_refetch_once_per_cooldown_and_are_negative_cached(
    server: KeyServer, fake: FakeClock
) -> None:
    keys = remote(server, fake, cooldown=30)
    keys.refresh()

    def miss(kid: str) -> int:
        keys.await_refresh(kid, "ES256")
        return keys.state().unknown_kid_refetches

    assert miss("k2") == 1
    assert miss("k2") == 1  # joins the refetch already asked for
    keys.refresh(scheduled=False)  # what the thread does next: k2 is still not there
    fake.advance(31)
    assert miss("k2") == 1  # negative-cached: no refetch for it until the next refresh
    assert miss("k3") == 2  # another kid after the cooldown: one refetch
    keys.refresh(scheduled=False)
    fake.advance(5)
    assert miss("k4") == 2  # inside the cooldown: denied without a fetch
    keys.refresh()  # the scheduled refresh forgets the negative cache
    fake.advance(31)
    assert miss("k2") == 3
    assert server.hits("/jwks") == 4


def test_a_refetch_that_finds_the_kid(server: KeyServer, fake: FakeClock) -> None:
    keys = remote(server, fake)
    keys.refresh()
    keys.await_refresh("k2", "ES256")
    server.json("/jwks", jwks("k1", "k2"))
    keys.refresh(scheduled=False)
    assert keys.current().candidates("k2", "ES256")
    assert keys.await_refresh("k2", "ES256") is keys.current()


def test_discovery_runs_on_scheduled_refreshes_only(server: KeyServer, fake: FakeClock) -> None:
    server.discovery(ISSUER)
    keys = remote(server, fake, kind="discovery", path="/.well-known/openid-configuration")
    keys.refresh()
    keys.refresh(scheduled=False)
    assert (server.hits("/.well-known/openid-configuration"), server.hits("/jwks")) == (1, 2)
    keys.refresh()
    assert (server.hits("/.well-known/openid-configuration"), server.hits("/jwks")) == (2, 3)
    assert keys.current().kids == ("k1",)


def test_discovery_for_another_issuer_is_refused(server: KeyServer, fake: FakeClock) -> None:
    server.discovery("https://evil.example")
    keys = remote(server, fake, kind="discovery", path="/.well-known/openid-configuration")
    keys.refresh()
    state = keys.state()
    assert not state.ready and state.fetches == {"issuer_mismatch": 1}
    assert "'https://evil.example'" in (state.last_error or "")
    assert server.hits("/jwks") == 0


def test_x509_certificate_map(server: KeyServer, fake: FakeClock) -> None:
    cert = self_signed_cert_pem(ec.generate_private_key(ec.SECP256R1()))
    server.json("/certs", {"c1": cert, "bad": "nope"})
    keys = remote(server, fake, kind="x509", path="/certs")
    keys.refresh()
    state = keys.state()
    assert state.kids == ("c1",) and len(state.warnings) == 1


def test_concurrent_misses_share_one_fetch_and_wait_for_it(server: KeyServer) -> None:
    keys = remote(server, wait=5)
    keys.start()
    try:
        assert keys.wait_attempted(5) and keys.current().kids == ("k1",)
        server.json("/jwks", jwks("k1", "k2"))
        barrier = threading.Barrier(20)

        def miss() -> KeySet:
            barrier.wait()
            return keys.await_refresh("k2", "ES256")

        with ThreadPoolExecutor(20) as pool:
            results = list(pool.map(lambda _: miss(), range(20)))
        assert all(r.candidates("k2", "ES256") for r in results)
        assert server.hits("/jwks") == 2
        assert keys.state().unknown_kid_refetches == 1
    finally:
        keys.stop(join=5)


def test_a_request_waits_no_longer_than_its_budget(server: KeyServer) -> None:
    keys = remote(server, wait=0.2, timeout=3)
    keys.start()
    try:
        assert keys.wait_attempted(5)
        server.fault("/jwks", body=b"{}", delay=2)
        started = time.monotonic()
        found = keys.await_refresh("k2", "ES256")
        waited = time.monotonic() - started
        assert 0.19 < waited < 0.35
        assert found.kids == ("k1",)
    finally:
        keys.stop(join=5)


def test_the_manager_keeps_sources_across_rebuilds(server: KeyServer) -> None:
    manager = KeyManager(start=False)
    source = RemoteSource("jwksUri", f"{server.url}/jwks", ISSUER, ES)
    first = manager.remote(ID, source, fetch_settings())
    assert manager.remote(ID, source, fetch_settings(refresh=60)) is first
    assert manager.remote("JWTIssuer/other/idp", source, fetch_settings()) is not first
    moved = RemoteSource("jwksUri", f"{server.url}/jwks2", ISSUER, ES)
    assert manager.remote(ID, moved, fetch_settings()) is not first
    manager.retain([first])
    assert manager.remote(ID, source, fetch_settings()) is first
    manager.retain([])
    assert manager.remote(ID, source, fetch_settings()) is not first


def test_new_settings_reschedule_a_kept_source(server: KeyServer, fake: FakeClock) -> None:
    keys = remote(server, fake)
    keys.refresh()
    keys.configure(fetch_settings(refresh=60, wait=0))
    assert keys.state().next_refresh == fake.now + 60


def test_retain_stops_the_refresh_thread(server: KeyServer) -> None:
    manager = KeyManager()
    source = RemoteSource("jwksUri", f"{server.url}/jwks", ISSUER, ES)
    keys = manager.remote(ID, source, fetch_settings())
    assert manager.wait_attempted(5)
    names = {t.name for t in threading.enumerate()}
    assert f"keys {ID}" in names
    manager.retain([])
    keys.stop(join=5)
    assert f"keys {ID}" not in {t.name for t in threading.enumerate()}
    assert keys.state().next_refresh is None


def test_static_keys_and_state_status(fake: FakeClock) -> None:
    key_set, _ = parse_jwks(jwks("k1"), ES)
    static = StaticKeys(key_set, "jwks (inline)", clock=fake.clock)
    assert static.await_refresh("other", "ES256") is static.current() is key_set
    assert static.state().status() == {
        "source": "jwks (inline)",
        "ready": True,
        "count": 1,
        "kids": ["k1"],
        "lastRefresh": "2023-11-14T22:13:20Z",
        "stale": False,
    }
    failed = KeyState("jwksUri https://x", last_error="timeout: slow", last_attempt=fake.now)
    assert failed.status() == {
        "source": "jwksUri https://x",
        "ready": False,
        "count": 0,
        "lastAttempt": "2023-11-14T22:13:20Z",
        "lastError": "timeout: slow",
        "stale": False,
    }
    assert failed.age(fake.now) is None


# -- waits never hold the threads other requests need (issue 11, item 11) --------------------


def _timed_misses(keys: RemoteKeys, count: int, *more: RemoteKeys) -> list[float]:
    """`count` concurrent unknown-kid requests to each of `keys` and `more`, all let go at
    once; how long each was held."""
    every = [k for k in (keys, *more) for _ in range(count)]
    barrier = threading.Barrier(len(every))

    def miss(i: int) -> float:
        barrier.wait()
        started = time.monotonic()
        every[i].await_refresh(f"junk-{i}", "ES256")
        return time.monotonic() - started

    with ThreadPoolExecutor(len(every)) as pool:
        return list(pool.map(miss, range(len(every))))


def test_a_hanging_key_server_holds_at_most_two_threads_per_issuer(server: KeyServer) -> None:
    """A tenant may set a 5 s wait and point its issuer at a server that hangs: past the
    refetch's first FAST_WAIT only two requests keep waiting; the others return at once."""
    keys = remote(server, wait=2, timeout=5, cooldown=1)
    keys.start()
    try:
        assert keys.wait_attempted(5)
        server.fault("/jwks", body=b"{}", delay=4)
        held = _timed_misses(keys, 12)
        assert sum(1 for h in held if h > 1.5) == 2, held  # the two long-wait slots
        assert sum(1 for h in held if h < 0.5) == 10, held  # the rest: the fast window only
        assert keys.state().waits_cut_short == 10
    finally:
        keys.stop(join=0)


def test_long_wait_slots_are_shared_by_all_issuers(server: KeyServer) -> None:
    for i in range(2):
        server.json(f"/jwks{i}", jwks("k1"))  # before the sources start fetching
    manager = KeyManager(wait_slots=1)
    sources = [
        manager.remote(
            f"JWTIssuer/t{i}/idp",
            RemoteSource("jwksUri", f"{server.url}/jwks{i}", ISSUER, ES),  # type: ignore[arg-type]
            fetch_settings(wait=2, timeout=5),
        )
        for i in range(2)
    ]
    try:
        assert manager.wait_attempted(5) and all(s.state().ready for s in sources)
        for i in range(2):
            server.fault(f"/jwks{i}", body=b"{}", delay=4)
        # all four at once: a pool per issuer could start one issuer's requests after the
        # other's slot holder is done (on a loaded machine), and the slot would serve twice
        held = _timed_misses(sources[0], 2, sources[1])
        long = [h for h in held if h > 1.5]
        assert len(long) == 1, held  # one slot for the whole process
    finally:
        manager.close(join=0)


def test_without_waiting_a_miss_says_whether_a_refetch_could_help(server: KeyServer) -> None:
    keys = remote(server, wait=2, cooldown=30)
    keys.start()
    try:
        assert keys.wait_attempted(5)
        server.fault("/jwks", body=b"{}", delay=1)
        assert keys.await_refresh("k2", "ES256", wait=False) is None  # started: wait elsewhere
        assert keys.await_refresh("k3", "ES256", wait=False) is None  # joins the same refetch
        assert keys.state().unknown_kid_refetches == 1
    finally:
        keys.stop(join=0)
    static = StaticKeys(KeySet.empty(), "test")
    assert static.await_refresh("k2", "ES256", wait=False) is static.current()
