"""The introspector against a real local endpoint: cache, single flight, bounded waits,
the circuit breaker, and a clear failure for each fault an endpoint can produce."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from authz.introspection.introspector import (
    IntrospectionSettings,
    Introspector,
    Pending,
    Unavailable,
)
from authz.introspection.manager import CallPool, IntrospectionManager
from authz.keys.client_auth import ClientAuth, InlineSecret
from tests.support.introspection_server import ClientCheck, IntrospectionServer

NOW = 1_700_000_000.0
ACTIVE = {"active": True, "sub": "svc", "scope": "read", "exp": NOW + 3600}


@pytest.fixture
def endpoint() -> Iterator[IntrospectionServer]:
    with IntrospectionServer(ClientCheck("client_secret_basic", "rs", "s3")) as server:
        server.answer("tok", ACTIVE)
        yield server


@pytest.fixture
def manager() -> Iterator[IntrospectionManager]:
    made = IntrospectionManager(workers=8, wait_slots=2)
    yield made
    made.close()


def settings(url: str, **changes: Any) -> IntrospectionSettings:
    values: dict[str, Any] = {
        "endpoint": url,
        "auth": ClientAuth("client_secret_basic", "rs", InlineSecret(b"s3")),
        "allow_http": True,
        "wait": 1.0,
        "timeout": 2.0,
    }
    return IntrospectionSettings(**{**values, **changes})


def introspector(manager: IntrospectionManager, url: str, **changes: Any) -> Introspector:
    return manager.introspector("JWTIssuer/t/idp", settings(url, **changes))


def failure(subject: Introspector, token: str = "tok", now: float = NOW) -> str:
    with pytest.raises(Unavailable) as info:
        subject.lookup(token, wait=True, now=now)
    return info.value.detail


def test_an_answer_is_cached_until_min_of_exp_and_cache_seconds(
    endpoint: IntrospectionServer, manager: IntrospectionManager
) -> None:
    subject = introspector(manager, endpoint.url, cache_seconds=30)
    assert subject.lookup("tok", wait=True, now=NOW).claims["sub"] == "svc"
    assert subject.lookup("tok", wait=True, now=NOW + 29).active
    assert endpoint.calls["tok"] == 1
    endpoint.revoke("tok")  # RFC 7009 at the provider: seen once the entry is gone
    assert not subject.lookup("tok", wait=True, now=NOW + 30).active
    assert endpoint.calls["tok"] == 2
    endpoint.answer("short", {**ACTIVE, "exp": NOW + 5})
    subject.lookup("short", wait=True, now=NOW)
    subject.lookup("short", wait=True, now=NOW + 5)  # exp reached: asked again
    assert endpoint.calls["short"] == 2


def test_inactive_answers_are_cached_briefly(
    endpoint: IntrospectionServer, manager: IntrospectionManager
) -> None:
    subject = introspector(manager, endpoint.url, negative_cache_seconds=5)
    for offset in (0, 1, 4):
        assert not subject.lookup("unknown", wait=True, now=NOW + offset).active
    assert endpoint.calls["unknown"] == 1
    subject.lookup("unknown", wait=True, now=NOW + 5)
    assert endpoint.calls["unknown"] == 2


def test_one_call_per_token_in_flight(endpoint: IntrospectionServer) -> None:
    """Twenty requests with one new token at once: one call (slots for all, so that a
    loaded machine stretching the call past the fast window changes nothing)."""
    endpoint.fault(delay=0.2)
    manager = IntrospectionManager(wait_slots=20)
    subject = introspector(manager, endpoint.url)
    results: list[bool] = []

    def ask() -> None:
        results.append(subject.lookup("tok", wait=True, now=NOW).active)

    threads = [threading.Thread(target=ask) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 20
    assert endpoint.calls["tok"] == 1
    manager.close()


def test_an_event_loop_is_told_to_wait_elsewhere_and_the_call_goes_on(
    endpoint: IntrospectionServer, manager: IntrospectionManager
) -> None:
    endpoint.fault(delay=0.2)
    subject = introspector(manager, endpoint.url)
    started = time.monotonic()
    with pytest.raises(Pending):
        subject.lookup("tok", wait=False, now=NOW)
    assert time.monotonic() - started < 0.1  # never blocks
    assert subject.lookup("tok", wait=True, now=NOW).active  # joins the call under way
    assert endpoint.calls["tok"] == 1


def test_a_hanging_endpoint_holds_a_request_for_the_wait_budget_only(
    endpoint: IntrospectionServer, manager: IntrospectionManager
) -> None:
    endpoint.fault(delay=3)
    subject = introspector(manager, endpoint.url, wait=0.3, timeout=1.0)
    started = time.monotonic()
    assert "no introspection answer within 300 ms" in failure(subject)
    assert 0.25 < time.monotonic() - started < 0.9


def test_waits_past_the_fast_window_need_a_slot(
    endpoint: IntrospectionServer, manager: IntrospectionManager
) -> None:
    """Two slots: a third waiter on a slow call gives up after the fast window."""
    endpoint.fault(delay=1.5)
    subject = introspector(manager, endpoint.url, wait=1.0, timeout=3.0)
    details: list[str] = []

    def wait_for(token: str) -> None:
        try:
            subject.lookup(token, wait=True, now=NOW)
        except Unavailable as exc:
            details.append(exc.detail)

    threads = [threading.Thread(target=wait_for, args=(f"t{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum("no wait slot free" in d for d in details) == 1
    assert sum("within 1000 ms" in d for d in details) == 2
    assert subject.state().waits_cut_short == 1


def test_too_many_calls_in_flight_are_refused_at_once(
    endpoint: IntrospectionServer, manager: IntrospectionManager
) -> None:
    endpoint.fault(delay=0.5)
    subject = introspector(manager, endpoint.url, max_in_flight=2)
    for token in ("a", "b"):
        with pytest.raises(Pending):
            subject.lookup(token, wait=False, now=NOW)
    started = time.monotonic()
    assert "2 introspection calls already in flight" in failure(subject, "c")
    assert time.monotonic() - started < 0.1
    assert subject.state().refused == {"busy": 1}


def test_the_breaker_opens_refuses_without_calls_and_a_probe_closes_it(
    endpoint: IntrospectionServer, manager: IntrospectionManager
) -> None:
    endpoint.fault(status=500, body=b"down")
    subject = introspector(manager, endpoint.url, failure_threshold=3, open_seconds=1)
    for i in range(3):
        assert "http_status" in failure(subject, f"t{i}")
    calls = len(endpoint.requests)
    detail = failure(subject, "t9")
    assert "circuit open after 3 failed calls" in detail and len(endpoint.requests) == calls
    assert subject.state().circuit_open
    endpoint.fault()
    time.sleep(1.05)
    assert subject.lookup("tok", wait=True, now=NOW).active  # the probe
    assert not subject.state().circuit_open
    assert subject.state().calls == {"http_status": 3, "ok": 1}


def test_cached_answers_keep_serving_while_the_endpoint_is_down(
    endpoint: IntrospectionServer, manager: IntrospectionManager
) -> None:
    subject = introspector(manager, endpoint.url, failure_threshold=1)
    subject.lookup("tok", wait=True, now=NOW)
    endpoint.fault(status=503)
    failure(subject, "other")
    assert subject.state().circuit_open
    assert subject.lookup("tok", wait=True, now=NOW + 1).active


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ({"status": 302, "headers": {"Location": "https://elsewhere.test/steal"}}, "redirect"),
        ({"status": 401}, "http_status"),
        ({"body": b"x" * (65 * 1024)}, "too_large"),
        ({"body": b'{"active": true,' + b" " * (64 * 1024) + b"}"}, "too_large"),
        ({"body": b"<html>login</html>"}, "invalid"),
        ({"body": b'{"active": "yes"}'}, "invalid"),
        ({"body": b'{"active": true, "active": false}'}, "invalid"),
        ({"body": b"[" * 50_000}, "invalid"),
    ],
)
def test_each_bad_endpoint_answer_is_a_clear_failure(
    endpoint: IntrospectionServer,
    manager: IntrospectionManager,
    fault: dict[str, Any],
    expected: str,
) -> None:
    endpoint.fault(**fault)
    subject = introspector(manager, endpoint.url)
    detail = failure(subject)
    assert detail.startswith(f"introspection failed: {expected}")
    assert "tok" not in detail.replace("introspect", "")


def test_wrong_client_credentials_are_an_outage_not_an_inactive_token(
    endpoint: IntrospectionServer, manager: IntrospectionManager
) -> None:
    wrong = ClientAuth("client_secret_basic", "rs", InlineSecret(b"wrong"))
    subject = introspector(manager, endpoint.url, auth=wrong)
    assert "HTTP 401" in failure(subject)


def test_settings_change_keeps_answers_a_new_client_does_not(
    endpoint: IntrospectionServer, manager: IntrospectionManager
) -> None:
    first = introspector(manager, endpoint.url)
    first.lookup("tok", wait=True, now=NOW)
    same = introspector(manager, endpoint.url, cache_seconds=120, wait=0.5)
    assert same is first and same.settings.cache_seconds == 120
    assert same.lookup("tok", wait=True, now=NOW).active and endpoint.calls["tok"] == 1
    other = manager.introspector(
        "JWTIssuer/t/idp",
        settings(endpoint.url, auth=ClientAuth("client_secret_post", "rs2", InlineSecret(b"x"))),
    )
    assert other is not first
    manager.retain([other])
    assert len(manager.cache) == 0  # the old client's answers went with it


def test_the_pool_starts_threads_on_demand_and_lets_idle_ones_go() -> None:
    pool = CallPool(3, idle=0.2)
    done = threading.Event()
    gate = threading.Event()
    for _ in range(5):
        pool(gate.wait)
    assert pool.threads == 3
    pool(done.set)
    gate.set()
    assert done.wait(2)
    deadline = time.monotonic() + 3
    while pool.threads and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.threads == 0
    pool.stop()


def test_a_tenants_endpoint_may_not_be_a_local_address(
    endpoint: IntrospectionServer, manager: IntrospectionManager
) -> None:
    """A namespaced issuer's calls are public_only: loopback is refused at connect time."""
    subject = introspector(manager, endpoint.url, public_only=True)
    detail = failure(subject)
    assert "connect_error" in detail and "may not fetch from" in detail
    assert endpoint.requests == []
