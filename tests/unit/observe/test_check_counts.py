"""Decisions and Check durations are tallied per thread; /metrics must read exactly as
prometheus_client's own Counter and Histogram would, and no Check may go uncounted."""

from __future__ import annotations

import random
import threading

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from authz.observe.metrics import CHECK_BUCKETS, Metrics

LABELS = [
    ("allow", "allowed", "AuthzPolicy/shop/orders"),
    ("deny", "token_missing", "AuthzPolicy/shop/orders"),
    ("deny", "no_policy", ""),
    ("allow", "allowed_anonymous", 'AuthzPolicy/x/"quoted\\'),
]


def _families(text: bytes, *names: str) -> list[str]:
    return [line for line in text.decode().splitlines() if any(n in line for n in names)]


def test_the_exposition_is_prometheus_clients() -> None:
    metrics = Metrics(CollectorRegistry())
    reference = CollectorRegistry()
    counter = Counter(
        "authz_decisions_total",
        "Check decisions by result, reason code and policy.",
        ["decision", "reason", "policy"],
        registry=reference,
    )
    histogram = Histogram(
        "authz_check_duration_seconds",
        "Time spent in the Check handler.",
        buckets=CHECK_BUCKETS,
        registry=reference,
    )
    rng = random.Random(7)
    checks = [
        (rng.choice(LABELS), rng.choice([0.0, 5e-5, 7e-5, 0.001, 0.3, 2.0])) for _ in range(500)
    ]
    for part in range(4):  # four threads in turn: the label sets first appear in this order
        worker = threading.Thread(
            target=lambda part=part: [metrics.checks.count(*c) for c in checks[part::4]]
        )
        worker.start()
        worker.join()
    for part in range(4):
        for labels, seconds in checks[part::4]:
            counter.labels(*labels).inc()
            histogram.observe(seconds)
    names = ("authz_decisions", "authz_check_duration")
    ours = _families(generate_latest(metrics.registry), *names)
    theirs = _families(generate_latest(reference), *names)
    # The same lines; only the sum of durations may differ in its last digits (added per
    # thread, then the threads' sums: float addition in another order).
    sums = [
        i for i, line in enumerate(theirs) if line.startswith("authz_check_duration_seconds_sum")
    ]
    assert [line for i, line in enumerate(ours) if i not in sums] == [
        line for i, line in enumerate(theirs) if i not in sums
    ]
    assert float(ours[sums[0]].split()[1]) == pytest.approx(float(theirs[sums[0]].split()[1]))
    assert any('le="+Inf"} 500.0' in line for line in ours)


def test_no_check_is_lost_across_threads() -> None:
    metrics = Metrics(CollectorRegistry())
    start = threading.Barrier(8)

    def checks() -> None:
        start.wait()
        for i in range(20_000):
            metrics.checks.count(LABELS[i % 2], 0.0001)

    workers = [threading.Thread(target=checks) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    registry = metrics.registry
    allowed = dict(zip(("decision", "reason", "policy"), LABELS[0], strict=True))
    assert registry.get_sample_value("authz_decisions_total", allowed) == 80_000
    assert registry.get_sample_value("authz_check_duration_seconds_count") == 160_000
