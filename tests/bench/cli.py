"""`python -m tests.bench`: run the scenarios, print the tables, write .bench/results.json.

Options (environment or flags; flags win):
  BENCH_DURATION / --duration S   measured seconds per scenario (default 8)
  BENCH_QUICK=1 / --quick         smoke mode: ~1 s per scenario, small token sets
  --scenarios a,b*,...            names or globs (see --list); default: all
  --profile                       py-spy profile of authz under cache-hit load
  --out PATH                      JSON results (default .bench/results.json)
  BENCH_AUTHZ_ARGS                extra `authz serve` arguments, e.g. "--log-level warning"
  BENCH_NO_BUILD=1                never build opa-envoy-plugin; use it only if cached
  BENCH_PIN=0 / --no-pin          leave CPU placement to the scheduler (see layout.py)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from tests.bench import drivers, micro, report, scenarios
from tests.bench.layout import make_layout, running_on
from tests.bench.machine import machine
from tests.bench.runner import Bench, Settings
from tests.bench.stack import REPO_ROOT
from tests.support.envoy import envoy_binary

DEFAULT_SECONDS = 8
LEGEND = textwrap.fill(
    "rps: completed requests per second; p50/p99/p99.9: latency in ms (closed loop: "
    "includes queueing at 32 in flight; *_open: h2load at a fixed rate, 50% of the "
    "closed-loop capacity unless the note names another). envoy/server/client us: CPU microseconds per request of "
    "Envoy, the ext_authz server in that row, and the load generator. RSS: the server. "
    "bg%: machine CPU not accounted to the processes in the row (other processes, "
    "kernel network softirq), % of all cores.",
    width=100,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=int, default=None, help="seconds per scenario")
    parser.add_argument("--quick", action="store_true", default=None, help="smoke mode")
    parser.add_argument("--scenarios", default="", help="comma-separated names or globs")
    parser.add_argument("--profile", action="store_true", help="py-spy profile of authz")
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin processes to CPUs (see layout.py)"
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / ".bench" / "results.json")
    parser.add_argument("--list", action="store_true", help="list scenario names and exit")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    quick = args.quick if args.quick is not None else os.environ.get("BENCH_QUICK") == "1"
    seconds = args.duration or int(os.environ.get("BENCH_DURATION") or 0)
    if not seconds:
        seconds = 1 if quick else DEFAULT_SECONDS
    patterns = tuple(p.strip() for p in args.scenarios.split(",") if p.strip())
    warmup = 1 if quick else max(2, seconds // 4)
    pin = not args.no_pin and os.environ.get("BENCH_PIN", "1") != "0"
    return Settings(seconds, warmup, quick, patterns, args.profile, pin)


def _missing_tools() -> list[str]:
    return [tool for tool in ("wrk", "h2load") if shutil.which(tool) is None]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        print("\n".join(scenarios.ALL_SCENARIOS))
        return 0
    settings = settings_from(args)
    unknown = [
        p
        for p in settings.patterns
        if not any(settings.selected(n) for n in scenarios.ALL_SCENARIOS)
    ]
    if unknown:
        print(f"no scenario matches {', '.join(unknown)} (see --list)", file=sys.stderr)
        return 2
    missing = _missing_tools()
    if missing:
        print(f"missing load generators: {', '.join(missing)} (apt-get install wrk nghttp2-client)")
        return 2

    from authz.observe import logs

    logs.configure("error")  # the in-process microbenchmarks load policies; keep them quiet
    host = machine(envoy_binary())
    layout = make_layout(settings.pin)
    drivers.use_cpus(layout.driver)
    print(host.describe())
    print(layout.describe())
    print(
        f"settings: {settings.seconds}s per scenario after {settings.warmup}s warm-up"
        f"{', QUICK smoke mode' if settings.quick else ''}; everything on 127.0.0.1\n",
        flush=True,
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="authz-bench-") as tmp:
        bench = Bench(settings, Path(tmp), layout, log=lambda s: print(s, flush=True))
        material = scenarios.Material(Path(tmp), settings.quick)
        micro_results: list[micro.MicroResult] = []
        if settings.selected("micro"):
            print("microbenchmarks (in-process)", flush=True)
            try:
                with running_on(layout.server):
                    micro_results = micro.run(material.realistic, material.issuers5, settings.quick)
            except Exception as exc:  # product code mid-change must not sink the whole run
                print(f"  microbenchmarks failed: {exc!r}", flush=True)
        scenarios.run_phases(bench, material)
    results = list(bench.results.values())
    target_items = report.targets(bench.results, micro_results)

    print(f"\nresults ({time.monotonic() - started:.0f}s total)")
    print(host.describe())
    print(layout.describe())
    print(report.scenario_table(results))
    print()
    print(LEGEND)
    if micro_results:
        print()
        print(report.micro_table(micro_results))
    if bench.profile:
        from tests.bench import profile

        print()
        print(profile.table(bench.profile))
    print()
    print(report.target_table(target_items))
    report.write_json(
        args.out,
        machine=host.as_dict(),
        settings=settings.as_dict(),
        results=results,
        micro=micro_results,
        target_items=target_items,
        profile=[bench.profile] if bench.profile else [],
    )
    print(f"\nwrote {args.out}")
    return 0 if all(r.ok or r.skipped for r in results) else 1
