"""Prometheus metrics. Label values come from small fixed sets (reason codes, policy ids)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from authz import __version__
from authz.policy.snapshot import Snapshot
from authz.policy.store import PolicyStore
from authz.request.cache import TokenCache

DECISIONS = Counter(
    "authz_decisions_total",
    "Check decisions by result, reason code and policy.",
    ["decision", "reason", "policy"],
)
CHECK_SECONDS = Histogram(
    "authz_check_duration_seconds",
    "Time spent in the Check handler.",
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1),
)
SNAPSHOT_SWAPS = Counter("authz_snapshot_swaps_total", "Policy snapshots swapped in.")
BUILD = Info("authz_build", "Build information.")
BUILD.info({"version": __version__})
POLICY_ERRORS = Gauge(
    "authz_policy_objects_rejected", "Policy objects whose current version is not serving."
)


class StateCollector(Collector):
    """Reads live state at scrape time instead of updating gauges on the request path."""

    def __init__(self, store: PolicyStore, cache: TokenCache) -> None:
        self._store = store
        self._cache = cache

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        snapshot = self._store.snapshot
        yield GaugeMetricFamily(
            "authz_snapshot_version", "Serving policy snapshot version.", value=snapshot.version
        )
        yield GaugeMetricFamily(
            "authz_policies", "Policies in the serving snapshot.", value=len(snapshot.policies)
        )
        issuers = GaugeMetricFamily(
            "authz_issuer_keys", "Verification keys per issuer.", labels=["issuer"]
        )
        for issuer in snapshot.issuers.values():
            issuers.add_metric([issuer.id], len(issuer.keys.keys))
        yield issuers
        yield GaugeMetricFamily(
            "authz_token_cache_entries", "Verified tokens cached.", value=len(self._cache)
        )
        yield CounterMetricFamily(
            "authz_token_cache_hits", "Token cache hits.", value=self._cache.hits
        )
        yield CounterMetricFamily(
            "authz_token_cache_misses", "Token cache misses.", value=self._cache.misses
        )
        yield CounterMetricFamily(
            "authz_token_cache_evictions", "Token cache evictions.", value=self._cache.evictions
        )


def register_state(store: PolicyStore, cache: TokenCache) -> None:
    REGISTRY.register(StateCollector(store, cache))

    def on_swap(_snapshot: Snapshot) -> None:
        SNAPSHOT_SWAPS.inc()
        POLICY_ERRORS.set(sum(1 for s in store.statuses.values() if not s.accepted))

    store.on_swap(on_swap)
