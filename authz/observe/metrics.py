"""Prometheus metrics, one `Metrics` object per process. Label values come from small fixed
sets (reason codes, policy ids); live state (snapshot, keys, cache) is read at scrape time.

The two series every Check updates (decisions and Check duration) are tallied by the thread
that made the Check, in plain Python ints, and summed at scrape time (`CheckCounts`): the
exposition is the same as prometheus_client's Counter and Histogram would give, without
their per-update locks and method calls (~1 us of every Check).
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import REGISTRY, Collector
from prometheus_client.utils import floatToGoString

from authz import __version__
from authz.introspection.manager import IntrospectionManager
from authz.keys.provider import KeyState
from authz.policy.snapshot import Snapshot
from authz.request.cache import TokenCache


class _Status(Protocol):
    @property
    def accepted(self) -> bool: ...


class Watched(Protocol):
    """What metrics read of the policy store, at scrape time and on every swap."""

    @property
    def snapshot(self) -> Snapshot: ...

    @property
    def statuses(self) -> Mapping[str, _Status]: ...

    def key_states(self) -> Mapping[str, KeyState]: ...

    def on_swap(self, listener: Callable[[Snapshot], None]) -> None: ...


class Metrics:
    """The series authz writes, registered on `registry` (the process default unless a test
    or an embedding program gives its own)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # `_created` series: noise
        self.registry = registry
        self.checks = CheckCounts(CHECK_BUCKETS)
        registry.register(self.checks)
        self.queue_seconds = Histogram(
            "authz_check_queue_seconds",
            "Time a Check waited before its handler ran: for a free handler thread (grpc); for "
            "the event loop, sampled every 100 ms, or a wait-pool thread (http). It grows when "
            "authz is overloaded, before latency does.",
            ["transport"],
            buckets=(
                0.0001,
                0.00025,
                0.0005,
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                1.0,
            ),
            registry=registry,
        )
        self.dry_run_would_deny = Counter(
            "authz_dry_run_would_deny_total",
            "Requests a dry-run policy allowed but would have denied, by policy and would-be "
            "reason.",
            ["policy", "reason"],
            registry=registry,
        )
        self.propagation = Histogram(
            "authz_policy_propagation_seconds",
            "From a policy change (a file written, a cluster object change observed) to the new "
            "snapshot serving.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry,
        )
        self.snapshot_swaps = Counter(
            "authz_snapshot_swaps_total", "Policy snapshots swapped in.", registry=registry
        )
        self.policy_errors = Gauge(
            "authz_policy_objects_rejected",
            "Policy objects whose current version is not serving.",
            registry=registry,
        )
        Info("authz_build", "Build information.", registry=registry).info({"version": __version__})

    def watch(self, store: Watched, cache: TokenCache) -> None:
        """Export the store's and the cache's live state, and count swaps."""
        self.registry.register(StateCollector(store, cache))

        def on_swap(_snapshot: Snapshot) -> None:
            self.snapshot_swaps.inc()
            self.policy_errors.set(sum(1 for s in store.statuses.values() if not s.accepted))

        store.on_swap(on_swap)

    def watch_introspection(self, introspection: IntrospectionManager) -> None:
        """Export the introspectors' live state (calls, refusals, breaker, cache)."""
        self.registry.register(IntrospectionCollector(introspection))

    def exposition(self) -> bytes:
        """The text format served on /metrics."""
        return generate_latest(self.registry)


CHECK_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)
Decided = tuple[str, str, str]  # the decision labels: decision, reason, policy


class _Tally:
    """One thread's counts. Only that thread writes them, so no update is lost."""

    __slots__ = ("buckets", "decisions", "seconds")

    def __init__(self, buckets: int) -> None:
        self.decisions: dict[Decided, int] = {}
        self.buckets = [0] * buckets
        self.seconds = 0.0


class CheckCounts(Collector):
    """`authz_decisions_total` (decision, reason, policy) and `authz_check_duration_seconds`,
    counted per thread and summed when scraped."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self._bounds = (*buckets, float("inf"))
        # `le` as prometheus_client writes it (Go's float format)
        self._le: tuple[str, ...] = tuple(
            floatToGoString(bound)  # type: ignore[no-untyped-call]
            for bound in self._bounds
        )
        self._local = threading.local()
        self._tallies: list[_Tally] = []
        self._seen: dict[Decided, None] = {}  # label sets in the order first counted
        self._lock = threading.Lock()

    def count(self, decided: Decided, seconds: float) -> None:
        """One Check: its decision labels and how long it took."""
        try:
            tally: _Tally = self._local.tally
        except AttributeError:
            tally = self._new_tally()
        decisions = tally.decisions
        count = decisions.get(decided)
        if count is None:
            with self._lock:
                self._seen.setdefault(decided)
            count = 0
        decisions[decided] = count + 1
        tally.buckets[bisect_left(self._bounds, seconds)] += 1
        tally.seconds += seconds

    def _new_tally(self) -> _Tally:
        tally = _Tally(len(self._bounds))
        with self._lock:
            self._tallies.append(tally)
        self._local.tally = tally
        return tally

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        with self._lock:
            tallies, seen = list(self._tallies), list(self._seen)
        totals: dict[Decided, int] = {}
        buckets = [0] * len(self._bounds)
        seconds = 0.0
        for tally in tallies:
            for decided, count in tally.decisions.copy().items():
                totals[decided] = totals.get(decided, 0) + count
            for i, count in enumerate(tally.buckets.copy()):
                buckets[i] += count
            seconds += tally.seconds
        decisions = CounterMetricFamily(
            "authz_decisions",
            "Check decisions by result, reason code and policy.",
            labels=["decision", "reason", "policy"],
        )
        for decided in seen:
            decisions.add_metric(decided, totals.get(decided, 0))
        yield decisions
        cumulative, running = [], 0
        for le, count in zip(self._le, buckets, strict=True):
            running += count
            cumulative.append((le, running))
        yield HistogramMetricFamily(
            "authz_check_duration_seconds",
            "Time spent in the Check handler.",
            buckets=cumulative,
            sum_value=seconds,
        )


class StateCollector(Collector):
    """Reads live state at scrape time instead of updating gauges on the request path."""

    def __init__(self, store: Watched, cache: TokenCache) -> None:
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
        yield from _key_metrics(self._store.key_states(), time.time())
        yield GaugeMetricFamily(
            "authz_token_cache_entries", "Verified tokens cached.", value=len(self._cache)
        )
        yield GaugeMetricFamily(
            "authz_token_cache_bytes",
            "Memory the cached tokens hold, as measured when each was stored.",
            value=self._cache.bytes,
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


def _key_metrics(
    states: Mapping[str, KeyState], now: float
) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    """Per-issuer key state: what an outage or a rotation looks like from outside."""
    keys = GaugeMetricFamily(
        "authz_issuer_keys", "Verification keys per issuer.", labels=["issuer"]
    )
    ready = GaugeMetricFamily(
        "authz_issuer_keys_ready",
        "1 if the issuer has keys; 0: its tokens are denied (keys_unavailable).",
        labels=["issuer"],
    )
    age = GaugeMetricFamily(
        "authz_issuer_key_age_seconds",
        "Seconds since the issuer's keys were last loaded successfully.",
        labels=["issuer"],
    )
    fetches = CounterMetricFamily(
        "authz_issuer_key_fetches",
        "Key refresh attempts by issuer and result (ok, timeout, http_status, invalid, ...).",
        labels=["issuer", "result"],
    )
    refetches = CounterMetricFamily(
        "authz_issuer_unknown_kid_refetches",
        "Refetches started because a token named an unknown kid.",
        labels=["issuer"],
    )
    cut_short = CounterMetricFamily(
        "authz_issuer_key_waits_cut_short",
        "Unknown-kid waits that stopped early because no long-wait slot was free (a slow "
        "key server may not hold the threads other requests need).",
        labels=["issuer"],
    )
    for issuer, state in states.items():
        keys.add_metric([issuer], state.count)
        ready.add_metric([issuer], 1 if state.ready else 0)
        seconds = state.age(now)
        if seconds is not None:
            age.add_metric([issuer], seconds)
        for result, count in sorted(state.fetches.items()):
            fetches.add_metric([issuer, result], count)
        refetches.add_metric([issuer], state.unknown_kid_refetches)
        cut_short.add_metric([issuer], state.waits_cut_short)
    yield from (keys, ready, age, fetches, refetches, cut_short)


class IntrospectionCollector(Collector):
    """Per-issuer introspection, read at scrape time: what an outage looks like from outside
    (failed calls by result, refusals, an open circuit) and what the cache saves."""

    def __init__(self, manager: IntrospectionManager) -> None:
        self._manager = manager

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        calls = CounterMetricFamily(
            "authz_introspection_calls",
            "Introspection calls by issuer and result (ok, timeout, http_status, redirect, "
            "too_large, invalid, client_auth, ...).",
            labels=["issuer", "result"],
        )
        refused = CounterMetricFamily(
            "authz_introspection_refused",
            "Requests refused with introspection_unavailable without a call, by issuer and "
            "why: circuit_open, busy (maxInFlight calls out), pool (shutting down).",
            labels=["issuer", "reason"],
        )
        cut_short = CounterMetricFamily(
            "authz_introspection_waits_cut_short",
            "Waits for an introspection answer that stopped early: no wait slot was free.",
            labels=["issuer"],
        )
        open_ = GaugeMetricFamily(
            "authz_introspection_circuit_open",
            "1 while the issuer's introspection circuit breaker is open (new opaque tokens are "
            "refused: introspection_unavailable).",
            labels=["issuer"],
        )
        in_flight = GaugeMetricFamily(
            "authz_introspection_in_flight", "Introspection calls under way.", labels=["issuer"]
        )
        for state in self._manager.states():
            issuer = state.issuer
            for result, count in sorted(state.calls.items()):
                calls.add_metric([issuer, result], count)
            for reason, count in sorted(state.refused.items()):
                refused.add_metric([issuer, reason], count)
            cut_short.add_metric([issuer], state.waits_cut_short)
            open_.add_metric([issuer], 1 if state.circuit_open else 0)
            in_flight.add_metric([issuer], state.in_flight)
        yield from (calls, refused, cut_short, open_, in_flight)
        cache = self._manager.cache
        yield GaugeMetricFamily(
            "authz_introspection_cache_entries", "Introspection answers cached.", value=len(cache)
        )
        yield GaugeMetricFamily(
            "authz_introspection_cache_bytes",
            "Memory the cached introspection answers hold.",
            value=cache.bytes,
        )
        yield CounterMetricFamily(
            "authz_introspection_cache_hits", "Introspection cache hits.", value=cache.hits
        )
        yield CounterMetricFamily(
            "authz_introspection_cache_misses", "Introspection cache misses.", value=cache.misses
        )
