"""The introspection metrics as a scrape shows them: calls by result, refusals, the breaker,
and the cache (a new token is one miss, however the request got its answer)."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry

from authz.introspection.introspector import IntrospectionSettings, Unavailable
from authz.introspection.manager import IntrospectionManager
from authz.keys.client_auth import ClientAuth
from authz.observe.metrics import Metrics
from tests.support.introspection_server import ClientCheck, IntrospectionServer

NOW = 1_700_000_000.0


def test_a_scrape_shows_calls_refusals_breaker_and_cache() -> None:
    manager = IntrospectionManager()
    metrics = Metrics(CollectorRegistry())
    metrics.watch_introspection(manager)
    with IntrospectionServer(ClientCheck("none")) as endpoint:
        endpoint.answer("good", {"active": True, "exp": NOW + 60})
        settings = IntrospectionSettings(
            endpoint.url, ClientAuth("none"), allow_http=True, wait=2.0, failure_threshold=1
        )
        subject = manager.introspector("JWTIssuer/t/idp", settings)
        for _ in range(3):
            subject.lookup("good", wait=True, now=NOW)
        endpoint.fault(status=500)
        for token in ("bad", "worse"):
            with contextlib.suppress(Unavailable):
                subject.lookup(token, wait=True, now=NOW)
    text = metrics.exposition().decode()
    issuer = 'issuer="JWTIssuer/t/idp"'
    assert f'authz_introspection_calls_total{{{issuer},result="ok"}} 1.0' in text
    assert f'authz_introspection_calls_total{{{issuer},result="http_status"}} 1.0' in text
    assert f'authz_introspection_refused_total{{{issuer},reason="circuit_open"}} 1.0' in text
    assert f"authz_introspection_circuit_open{{{issuer}}} 1.0" in text
    assert "authz_introspection_cache_hits_total 2.0" in text
    assert "authz_introspection_cache_misses_total 3.0" in text  # good, bad, worse
    assert "authz_introspection_cache_entries 1.0" in text
    manager.close()
