"""The printed tables and the JSON file: one row per scenario, one row per target.

Ratios for the targets are only ever formed from numbers taken in this same run on this
same machine; a target whose inputs were not measured (filtered out, a peer that could
not be built, `--workers` missing) says so instead of passing or failing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bench.drivers import LoadResult
from tests.bench.micro import MicroResult


@dataclass
class Result:
    """One scenario's row."""

    scenario: str
    driver: str
    load: LoadResult | None = None
    envoy_us: float | None = None  # Envoy CPU per request
    server: str | None = None  # which ext_authz server: authz, trivial, opa-envoy
    server_us: float | None = None  # that server's CPU per request
    server_rss_mb: float | None = None
    bg_pct: float | None = None  # CPU of processes not ours, % of the whole machine
    ok: bool = True  # every response was the one the scenario expects
    skipped: bool = False  # not measurable here (peer unavailable, feature missing)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def client_us(self) -> float | None:
        if self.load is None or self.load.requests == 0:
            return None
        return self.load.client_cpu_s / self.load.requests * 1e6

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "load"}
        out["load"] = self.load.as_dict() if self.load else None
        out["client_us"] = self.client_us
        return out


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


COLUMNS = (
    ("scenario", 24, "<"),
    ("load", 17, "<"),
    ("rps", 8, ">"),
    ("p50 ms", 7, ">"),
    ("p99 ms", 7, ">"),
    ("p99.9 ms", 8, ">"),
    ("envoy us", 8, ">"),
    ("server us", 9, ">"),
    ("client us", 9, ">"),
    ("RSS MB", 6, ">"),
    ("bg%", 4, ">"),
    ("ok", 3, "<"),
    ("note", 0, "<"),
)


def _line(cells: Sequence[str]) -> str:
    parts = [f"{c:{align}{width}}" for c, (_, width, align) in zip(cells, COLUMNS, strict=True)]
    return " ".join(parts).rstrip()


def scenario_table(results: Sequence[Result]) -> str:
    lines = [_line([c[0] for c in COLUMNS])]
    lines.append("-" * len(lines[0]))
    for r in results:
        load = r.load
        lines.append(
            _line(
                [
                    r.scenario,
                    r.driver,
                    _num(load.rps if load else None),
                    _num(load.p50_ms if load else None, 2),
                    _num(load.p99_ms if load else None, 2),
                    _num(load.p999_ms if load else None, 2),
                    _num(r.envoy_us),
                    _num(r.server_us),
                    _num(r.client_us),
                    _num(r.server_rss_mb),
                    _num(r.bg_pct),
                    "n/a" if r.skipped else ("yes" if r.ok else "NO"),
                    r.note,
                ]
            )
        )
    return "\n".join(lines)


def micro_table(micro: Sequence[MicroResult]) -> str:
    lines = [f"{'microbenchmark':<28} {'us':>8} {'floor us':>8} {'ratio':>6}  note"]
    for m in micro:
        ratio = m.ratio
        lines.append(
            f"{m.name:<28} {_num(m.us, 1):>8} {_num(m.baseline_us, 1):>8} "
            f"{_num(ratio, 2):>6}  {m.note}"
        )
    return "\n".join(lines)


@dataclass
class Target:
    number: int
    what: str
    goal: str
    measured: str
    met: bool | None  # None: not measured in this run

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def targets(results: Mapping[str, Result], micro: Sequence[MicroResult]) -> list[Target]:
    def rps(name: str) -> float | None:
        r = results.get(name)
        return r.load.rps if r is not None and r.load is not None and r.ok else None

    def server_us(name: str) -> float | None:
        r = results.get(name)
        return r.server_us if r is not None and r.ok else None

    out: list[Target] = []

    def add(
        number: int,
        what: str,
        value: float | None,
        goal: str,
        passes: Callable[[float], bool],
        why_missing: str,
        fmt: str = "{:.2f}x",
    ) -> None:
        if value is None:
            out.append(Target(number, what, goal, f"n/a: {why_missing}", None))
        else:
            out.append(Target(number, what, goal, fmt.format(value), passes(value)))

    add(
        1,
        "cache-hit CPU/req, authz vs trivial server (direct gRPC)",
        _ratio(server_us("authz_hit_grpc"), server_us("trivial_grpc")),
        "<= 1.25x",
        lambda v: v <= 1.25,
        "authz_hit_grpc or trivial_grpc not run",
    )
    add(
        1,
        "  same, behind Envoy (info)",
        _ratio(server_us("authz_hit"), server_us("trivial_envoy")),
        "<= 1.25x",
        lambda v: v <= 1.25,
        "authz_hit or trivial_envoy not run",
    )
    for m in micro:
        if m.name.startswith("verify "):
            add(
                2,
                f"cache-miss {m.name} vs raw cryptography + json",
                m.ratio,
                "<= 1.5x",
                lambda v: v <= 1.5,
                m.note or "microbenchmark failed",
            )
    add(
        3,
        "rps through Envoy, authz vs OPA-Envoy",
        _ratio(rps("authz_hit"), rps("opa_envoy")),
        ">= 1.0x",
        lambda v: v >= 1.0,
        "authz_hit or opa_envoy not run (see its row)",
    )
    add(
        3,
        "rps through Envoy, authz vs trivial server",
        _ratio(rps("authz_hit"), rps("trivial_envoy")),
        ">= 0.9x",
        lambda v: v >= 0.9,
        "authz_hit or trivial_envoy not run",
    )
    for variant, base in (
        ("scale_p1000_i1", "scale_p1_i1"),
        ("scale_p1000_i100", "scale_p1_i1"),
        ("scale_cond_p1000", "scale_cond_p1"),  # with request conditions (issue 12)
    ):
        add(
            4,
            f"CPU/req {variant} vs {base}",
            _ratio(server_us(variant), server_us(base)),
            "<= 1.1x",
            lambda v: v <= 1.1,
            f"{variant} or {base} not run",
        )
    workers = results.get("workers_2")
    add(
        5,
        "rps, 2 workers vs 1 (direct gRPC)",
        _ratio(rps("workers_2"), rps("workers_1")),
        ">= 1.7x",
        lambda v: v >= 1.7,
        workers.note if workers is not None and workers.note else "workers_* not run",
    )
    add(
        7,
        "rps through Envoy, authz HTTP checks vs trivial grpcio server",
        _ratio(rps("authz_http_hit"), rps("trivial_envoy")),
        ">= 1.5x",
        lambda v: v >= 1.5,
        "authz_http_hit or trivial_envoy not run",
    )
    add(
        7,
        "rps through Envoy, authz HTTP checks vs trivial HTTP server",
        _ratio(rps("authz_http_hit"), rps("trivial_http_envoy")),
        ">= 0.85x",
        lambda v: v >= 0.85,
        "authz_http_hit or trivial_http_envoy not run",
    )
    add(
        7,
        "cache-hit CPU/req, authz HTTP checks vs trivial HTTP server",
        _ratio(server_us("authz_http_hit"), server_us("trivial_http_envoy")),
        "<= 3x",
        lambda v: v <= 3,
        "authz_http_hit or trivial_http_envoy not run",
    )
    add(
        7,
        "rps, 2 workers vs 1 (HTTP checks, direct)",
        _ratio(rps("workers_http_2"), rps("workers_http_1")),
        ">= 1.8x",
        lambda v: v >= 1.8,
        "workers_http_* not run",
    )
    # wrk and the kernel's loopback work share the two cores with the workers, so requests/s
    # cannot double here; what decides whether a core each would double it: a worker costs
    # no more per check beside another (<= 1.1x) and the supervisor hands the proxy's
    # connections out evenly (the worker with fewest has >= 0.9x the mean).
    split = results.get("workers_http_2")
    balance = split.extra.get("connection_balance") if split is not None else None
    add(
        7,
        "  same, per core: CPU/check 2 workers vs 1 (info)",
        _ratio(server_us("workers_http_2"), server_us("workers_http_1")),
        "<= 1.1x",
        lambda v: v <= 1.1 and balance is not None and balance >= 0.9,
        "workers_http_* not run",
        fmt="{:.2f}x" + (f", connections min/mean {balance:.2f}" if balance is not None else ""),
    )
    memory = results.get("memory_100k")
    filled = memory.extra.get("cache_entries", 0) if memory is not None else 0
    add(
        6,
        "RSS with 100k cached tokens, 1000 policies",
        memory.server_rss_mb if memory is not None and filled >= 100_000 else None,
        "<= 150 MB",
        lambda v: v <= 150,
        f"cache held {filled:,.0f} tokens (quick mode fills fewer)"
        if memory is not None
        else "memory_100k not run",
        fmt="{:.0f} MB",
    )
    by_name = {m.name: m for m in micro}
    dpop, miss, hit = (
        by_name.get(n)
        for n in (
            "check() DPoP, token cached",
            "check() JWT miss, DPoP policy",
            "check() JWT hit, DPoP policy",
        )
    )
    added = verification = None
    if dpop is not None and miss is not None and hit is not None:
        added, verification = dpop.us - hit.us, miss.us - hit.us
    add(
        7,
        "DPoP: added to a cache-hit check vs one token verification",
        _ratio(added, verification),
        "<= 1.0x",
        lambda v: v <= 1.0,
        "the DPoP microbenchmarks did not run",
    )
    return out


def target_table(items: Sequence[Target]) -> str:
    width = max([len("target"), *(len(t.what) for t in items)])
    lines = [f"{'#':<2} {'target':<{width}} {'goal':<9} {'met':<4} measured"]
    for t in items:
        met = "n/a" if t.met is None else ("yes" if t.met else "NO")
        lines.append(f"{t.number:<2} {t.what:<{width}} {t.goal:<9} {met:<4} {t.measured}")
    return "\n".join(lines)


def write_json(
    path: Path,
    *,
    machine: Mapping[str, Any],
    settings: Mapping[str, Any],
    results: Sequence[Result],
    micro: Sequence[MicroResult],
    target_items: Sequence[Target],
    profile: Sequence[Mapping[str, Any]] = (),
    sections: Mapping[str, Any] | None = None,
) -> None:
    """The run as JSON; `sections` adds top-level keys (a tool's own tables)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "machine": dict(machine),
        "settings": dict(settings),
        "scenarios": [r.as_dict() for r in results],
        "micro": [m.as_dict() for m in micro],
        "targets": [t.as_dict() for t in target_items],
        "profile": list(profile),
        **(sections or {}),
    }
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
