"""`python -m tests.bench.http_stacks`: which stack should authz's HTTP transport run on?

Issue 14 asks for an HTTP ext_authz transport "on an event loop chosen by measurement".
This runs a trivial always-allow HTTP server on each candidate stack through Envoy's
`http_service` ext_authz, beside the trivial grpcio server through `grpc_service` (the
gRPC floor), with the same pinning, drivers and columns as `make bench`:

  grpc_floor            tests.bench.trivial_server (sync grpcio, thread pool), gRPC
  http_uvloop           asyncio.Protocol + httptools on uvloop (the chosen floor)
  http_asyncio          the same on the stdlib asyncio loop
  http_rloop            the same on rloop (Rust asyncio loop)
  http_granian[_h2]     granian (Rust, hyper + tokio) calling an RSGI handler; HTTP/1.1
                        or h2c (Envoy's cluster on HTTP/2)
  http_socketify        socketify (uWebSockets, libuv, cffi)
  http_uvloop_executor  the floor answering from a thread pool (run_in_executor)
  http_uvloop_max{1,4}  the floor behind an Envoy cluster capped at 1 or 4 connections

Every `*_open` row runs h2load at one fixed rate for all stacks (half the gRPC floor's
closed-loop capacity), so their p99 and CPU per request compare at equal load. The note
says how many connections Envoy opened to the server during the measured run for how
many checks (keep-alive reuse). An HTTP/1.1 connection carries one check at a time, so
Envoy holds as many as there are checks in flight (32 here); one whose check is
abandoned (client gone, check timed out) is closed, and the next check opens another.
`handoff` prices a thread hand-off in-process (tests/bench/handoff.py).

Stacks whose package is not installed are n/a (only uvloop and httptools are
dependencies; `pip install granian rloop socketify` adds the others).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.bench import drivers, envoy_configs, handoff
from tests.bench.cli import LEGEND, settings_from
from tests.bench.layout import make_layout, running_on
from tests.bench.machine import machine
from tests.bench.policies import ALLOW_PATH
from tests.bench.report import Result, scenario_table, write_json
from tests.bench.runner import Bench, HttpReq
from tests.bench.stack import REPO_ROOT, Proxy, Server, Stack
from tests.support.envoy import envoy_binary
from tests.support.procs import free_port

HOST = "bench.example"
TOKEN = "bench-token-not-checked"  # the trivial servers never look at it
PY = sys.executable
GRANIAN = [
    PY, "-m", "granian", "--interface", "rsgi", "--workers", "1", "--runtime-mode", "st",
    "--loop", "uvloop", "--no-ws", "--log-level", "warning",
]  # fmt: skip


@dataclass(frozen=True)
class Candidate:
    """One HTTP stack and how Envoy's `authz` cluster reaches it."""

    name: str
    argv: tuple[str, ...]
    packages: tuple[str, ...]
    note: str
    addr_flag: str = "--addr"
    http2: bool = False
    max_connections: int | None = None

    def missing(self) -> list[str]:
        return [p for p in self.packages if importlib.util.find_spec(p) is None]


FLOOR = (PY, "-m", "tests.bench.trivial_http_server")
CANDIDATES = (
    Candidate("http_uvloop", (*FLOOR, "--loop", "uvloop"), ("uvloop", "httptools"), "uvloop+httptools"),
    Candidate("http_asyncio", (*FLOOR, "--loop", "asyncio"), ("httptools",), "asyncio+httptools"),
    Candidate("http_rloop", (*FLOOR, "--loop", "rloop"), ("rloop", "httptools"), "rloop+httptools"),
    Candidate("http_granian", (*GRANIAN, "--http", "1", "tests.bench.http_candidates:rsgi_allow"),
              ("granian",), "granian RSGI, HTTP/1.1", addr_flag=""),
    Candidate("http_granian_h2", (*GRANIAN, "--http", "2", "tests.bench.http_candidates:rsgi_allow"),
              ("granian",), "granian RSGI, h2c", addr_flag="", http2=True),
    Candidate("http_socketify", (PY, "-m", "tests.bench.http_candidates"), ("socketify",),
              "socketify"),
    Candidate("http_uvloop_executor", (*FLOOR, "--handoff", "executor", "--threads", "4"),
              ("uvloop", "httptools"), "uvloop+httptools, run_in_executor (4 threads)"),
    Candidate("http_uvloop_max4", FLOOR, ("uvloop", "httptools"),
              "uvloop+httptools, Envoy max_connections 4", max_connections=4),
    Candidate("http_uvloop_max1", FLOOR, ("uvloop", "httptools"),
              "uvloop+httptools, Envoy max_connections 1", max_connections=1),
)  # fmt: skip
SCENARIOS = (
    "handoff", "grpc_floor", "grpc_floor_open",
    *(n for c in CANDIDATES for n in (c.name, f"{c.name}_open")),
)  # fmt: skip


def upstream_counters(proxy: Proxy) -> Callable[[], dict[str, float]]:
    """Envoy's counters for its `authz` cluster: connections opened, requests sent."""

    def read() -> dict[str, float]:
        stats = proxy.envoy.stats(r"^cluster\.authz\.upstream_(cx|rq)_total$")
        return {
            "upstream_cx": float(stats.get("cluster.authz.upstream_cx_total", 0)),
            "upstream_rq": float(stats.get("cluster.authz.upstream_rq_total", 0)),
        }

    return read


def connection_note(result: Result) -> None:
    """Say how Envoy used its connections to the server during the measured run."""
    opened, sent = result.extra.get("upstream_cx", 0.0), result.extra.get("upstream_rq", 0.0)
    result.note += f"; {opened:.0f} conns opened for {sent:,.0f} checks"


def measure(b: Bench, name: str, server: Server, proxy: Proxy, note: str, rate: float) -> None:
    req = HttpReq(HOST, ALLOW_PATH, TOKEN)
    b.http_closed(
        name,
        proxy,
        server,
        req,
        note=note,
        counters=upstream_counters(proxy),
        finish=connection_note,
    )
    if rate:
        b.http_open(f"{name}_open", proxy, server, req, rps=rate)


def grpc_floor(b: Bench) -> float:
    """The trivial grpcio server behind `grpc_service`; returns the common open-loop rate."""
    with Stack(b.layout) as stack:
        server = stack.trivial()
        listen, admin = free_port(), free_port()
        bootstrap = envoy_configs.ext_authz(listen, admin, server.grpc_addr)
        proxy = stack.envoy(bootstrap, listen, admin, front=True)
        b.http_closed("grpc_floor", proxy, server, HttpReq(HOST, ALLOW_PATH, TOKEN),
                      note="grpcio, always allow", counters=upstream_counters(proxy),
                      finish=connection_note)  # fmt: skip
        capacity = b.results.get("grpc_floor")
        if capacity is None or capacity.load is None:
            return 0.0
        rate = round(capacity.load.rps * 0.5)
        b.http_open("grpc_floor_open", proxy, server, HttpReq(HOST, ALLOW_PATH, TOKEN), rps=rate)
        return rate


def candidate(b: Bench, c: Candidate, rate: float) -> None:
    if not b.any_selected([c.name, f"{c.name}_open"]):
        return
    missing = c.missing()
    if missing:
        for name in (c.name, f"{c.name}_open"):
            b.skip(name, "-", f"n/a: {', '.join(missing)} not installed")
        return
    with Stack(b.layout) as stack:
        server = stack.http_server(c.name, c.argv, c.addr_flag)
        assert server.check_http_addr is not None
        listen, admin = free_port(), free_port()
        bootstrap = envoy_configs.ext_authz_http(
            listen, admin, server.check_http_addr, http2=c.http2, max_connections=c.max_connections
        )
        proxy = stack.envoy(bootstrap, listen, admin, front=True)
        measure(b, c.name, server, proxy, c.note, rate)


def run(b: Bench) -> None:
    rate = grpc_floor(b) if b.any_selected(["grpc_floor", "grpc_floor_open"]) else 0.0
    for c in CANDIDATES:
        try:
            candidate(b, c, rate)
        except Exception as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            b.log(f"  {c.name} failed: {first}")
            if b.settings.selected(c.name) and c.name not in b.results:
                b.record(Result(c.name, "-", ok=False, note=f"failed: {first[:100]}"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.http_stacks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=int, default=None, help="seconds per scenario")
    parser.add_argument("--quick", action="store_true", default=None, help="smoke mode")
    parser.add_argument("--scenarios", default="", help="comma-separated names or globs")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / ".bench" / "http_stacks.json")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.profile = False
    settings = settings_from(args)
    host = machine(envoy_binary())
    layout = make_layout(settings.pin)
    drivers.use_cpus(layout.driver)
    print(host.describe())
    print(layout.describe(), flush=True)
    handoffs: list[handoff.HandoffResult] = []
    if settings.selected("handoff"):
        with running_on(layout.server):
            handoffs = handoff.run(settings.quick)
        print(handoff.table(handoffs), flush=True)
    with tempfile.TemporaryDirectory(prefix="authz-http-stacks-") as tmp:
        bench = Bench(settings, Path(tmp), layout, log=lambda s: print(s, flush=True))
        run(bench)
    results = list(bench.results.values())
    print()
    print(scenario_table(results))
    print()
    print(LEGEND)
    if handoffs:
        print()
        print(handoff.table(handoffs))
    write_json(
        args.out,
        machine=host.as_dict(),
        settings=settings.as_dict(),
        results=results,
        micro=[],
        target_items=[],
        sections={"handoff": [dataclasses.asdict(h) for h in handoffs]},
    )
    print(f"\nwrote {args.out}")
    return 0 if all(r.ok or r.skipped for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
