"""`make soak` / `python -m tests.soak`: bounded loopback load through a real Envoy and authz.

    python -m tests.soak --seconds 600            # rps: 70% of the capacity measured first
    python -m tests.soak --seconds 60 --rps 300 --flip 2

Starts authz (`--debug-endpoints`, a token cache smaller than the token pool so it evicts),
the echo upstream and Envoy on free loopback ports; sends valid, invalid, expired and
missing tokens (tests/soak/scenario.py) at a fixed rate; every `--flip` seconds rewrites the
policy file with the other variant and records, from `/debug/snapshot`, which snapshot
version serves which variant and when the swap was applied. At the end every response is
checked against the decision of the variant whose snapshot decided it (from the audit
line of its unique path), and that version against the swap times: a request answered
before a change was written must have the old decision, one sent after the swap was seen
the new one. Samples authz's RSS every 2 s. Prints the figures; exits 1 on any error,
wrong decision, misplaced version or RSS growth over `--rss-growth-mib`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.conftest import EnvoyStack, start_envoy_stack
from tests.soak.load import Load, Sent
from tests.soak.scenario import Tokens, expected, issuer_doc, keys, policy_doc
from tests.support.procs import http_get

CACHE_ENTRIES = 100  # the valid token pools hold 3 x 400: the cache evicts between swaps
PER_KIND = 400
WARMUP_SECONDS = 1.0
PROBE_SECONDS = 3.0


@dataclass
class Swap:
    version: int
    variant: str
    written: float  # monotonic, just before the rename
    seen: float  # monotonic, when /debug/snapshot first showed the version


@dataclass
class Figures:
    swaps: list[Swap] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _write_policy(directory: Path, variant: str) -> None:
    """Atomically, as ConfigMap volumes and careful editors do: one change, one reload."""
    tmp = directory / ".policy.yaml.tmp"
    tmp.write_text(yaml.safe_dump(policy_doc(variant)))
    tmp.rename(directory / "policy.yaml")


def _snapshot_version(stack: EnvoyStack) -> int:
    _, body = http_get(f"{stack.authz.http_url}/debug/snapshot")
    version: int = json.loads(body)["version"]
    return version


def _flipper(
    stack: EnvoyStack, directory: Path, every: float, stop: threading.Event, figures: Figures
) -> None:
    version = _snapshot_version(stack)
    figures.swaps.append(Swap(version, "A", 0.0, 0.0))
    variant = "A"
    while not stop.wait(every):
        variant = "B" if variant == "A" else "A"
        written = time.monotonic()
        _write_policy(directory, variant)
        deadline = written + 5
        while (current := _snapshot_version(stack)) == version and time.monotonic() < deadline:
            time.sleep(0.005)
        seen = time.monotonic()
        if current != version + 1:
            figures.errors.append(f"swap to {variant}: version {version} -> {current}")
        version = current
        figures.swaps.append(Swap(version, variant, written, seen))


def _rss_sampler(pid: int, stop: threading.Event, figures: Figures) -> None:
    status = Path(f"/proc/{pid}/status")
    while True:
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                figures.rss_kib.append(int(line.split()[1]))
        if stop.wait(2.0):
            return


def _audit(log: Path) -> dict[int, dict[str, Any]]:
    """seq -> the audit line of `/soak/<route>/<seq>`."""
    out: dict[int, dict[str, Any]] = {}
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if '"decision"' not in line or "/soak/" not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        path = str(entry.get("path", ""))
        if entry.get("event") == "decision" and path.startswith("/soak/"):
            out[int(path.rsplit("/", 1)[1])] = entry
    return out


@dataclass
class Verdicts:
    wrong: list[str] = field(default_factory=list)
    misplaced: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    by_status: Counter[int] = field(default_factory=Counter)


def verify(results: list[Sent], audit: dict[int, dict[str, Any]], swaps: list[Swap]) -> Verdicts:
    variants = {s.version: s.variant for s in swaps}
    out = Verdicts()
    for r in results:
        out.by_status[r.status] += 1
        if r.error or r.status >= 500 or r.status == 0:
            out.errors.append(f"#{r.seq} {r.route}/{r.kind}: {r.status} {r.error}")
            continue
        entry = audit.get(r.seq)
        if entry is None:
            out.errors.append(f"#{r.seq}: answered {r.status} but no audit line")
            continue
        version = int(entry["snapshot"])
        variant = variants.get(version)
        if variant is None:
            out.errors.append(f"#{r.seq}: decided by unknown snapshot {version}")
            continue
        want = expected(variant, r.route, r.kind)
        if r.status != want or int(entry["status"]) != want:
            out.wrong.append(
                f"#{r.seq} {r.route}/{r.kind} under {variant} (v{version}): got {r.status}, "
                f"audit {entry['status']} {entry['reason']}, want {want}"
            )
        for swap in swaps[1:]:
            if r.received < swap.written and version >= swap.version:
                out.misplaced.append(f"#{r.seq}: v{version} before v{swap.version} was written")
            if r.sent > swap.seen and version < swap.version:
                out.misplaced.append(f"#{r.seq}: v{version} after v{swap.version} was serving")
    return out


def _metric(stack: EnvoyStack, name: str) -> float:
    _, body = http_get(f"{stack.authz.http_url}/metrics")
    for line in body.decode().splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return float("nan")


@dataclass
class Run:
    capacity: float | None
    rps: float
    results: list[Sent]  # the paced phase only
    total: int  # requests including warm-up and the capacity probe, all verified
    verdicts: Verdicts
    figures: Figures
    evictions: float


def _report(args: argparse.Namespace, run: Run) -> bool:
    capacity, rps, results = run.capacity, run.rps, run.results
    verdicts, figures, evictions = run.verdicts, run.figures, run.evictions
    latencies = sorted(r.received - r.sent for r in results if not r.error)
    rss = [k / 1024 for k in figures.rss_kib]
    warm = rss[min(len(rss) - 1, max(1, len(rss) // 4))] if rss else 0.0
    growth = rss[-1] - warm if rss else 0.0
    duration = max(r.received for r in results) - min(r.sent for r in results)
    print("soak figures")
    print(f"  duration        {duration:.0f} s, {len(figures.swaps) - 1} policy swaps")
    if capacity is not None:
        print(f"  capacity        {capacity:.0f} req/s measured; target 70% = {rps:.0f} req/s")
    else:
        print(f"  target          {rps:.0f} req/s")
    print(
        f"  requests        {len(results)} paced ({len(results) / duration:.0f} req/s achieved),"
        f" {run.total} verified in all"
    )
    print(f"  statuses        {dict(sorted(verdicts.by_status.items()))}")
    if latencies:
        p50 = statistics.median(latencies) * 1000
        p99 = latencies[int(len(latencies) * 0.99)] * 1000
        print(
            f"  latency         p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {latencies[-1] * 1000:.1f} ms"
        )
    print(f"  errors          {len(verdicts.errors) + len(figures.errors)}")
    print(f"  wrong decisions {len(verdicts.wrong)}")
    print(
        f"  misplaced       {len(verdicts.misplaced)} (decided by a version the swap times exclude)"
    )
    print(f"  token cache     {evictions:.0f} evictions (bounded at {CACHE_ENTRIES})")
    if rss:
        print(
            f"  authz RSS       first {rss[0]:.1f} MiB, after warm-up {warm:.1f}, last {rss[-1]:.1f},"
            f" max {max(rss):.1f}; growth {growth:+.1f} MiB (bound {args.rss_growth_mib})"
        )
    for line in (figures.errors + verdicts.errors + verdicts.wrong + verdicts.misplaced)[:20]:
        print(f"  ! {line}")
    ok = not (figures.errors or verdicts.errors or verdicts.wrong or verdicts.misplaced)
    ok = ok and growth <= args.rss_growth_mib and len(figures.swaps) > 1
    print(f"soak: {'PASS' if ok else 'FAIL'}")
    return ok


def soak(args: argparse.Namespace) -> Run:
    private, public = keys()
    tokens = Tokens.mint(private, lifetime=int(args.seconds) + 3600, per_kind=PER_KIND)
    with ExitStack() as stack:
        directory = Path(tempfile.mkdtemp(prefix="authz-soak-"))
        stack.callback(shutil.rmtree, directory, ignore_errors=True)
        (directory / "issuer.yaml").write_text(yaml.safe_dump(issuer_doc(public)))
        _write_policy(directory, "A")
        envoy = start_envoy_stack(
            stack,
            directory,
            authz_args=["--debug-endpoints", "--cache-entries", str(CACHE_ENTRIES)],
        )
        load = Load(envoy.listen_port, tokens, workers=args.workers)
        load.run(rps=0, seconds=WARMUP_SECONDS)
        capacity = None
        rps = args.rps
        if rps <= 0:
            capacity = len(load.run(rps=0, seconds=PROBE_SECONDS)) / PROBE_SECONDS
            rps = 0.7 * capacity
        figures = Figures()
        stop = threading.Event()
        helpers = [
            threading.Thread(
                target=_flipper, args=(envoy, directory, args.flip, stop, figures), daemon=True
            ),
            threading.Thread(
                target=_rss_sampler, args=(envoy.authz.process.pid, stop, figures), daemon=True
            ),
        ]
        for helper in helpers:
            helper.start()
        paced = load.run(rps=rps, seconds=args.seconds)
        stop.set()
        for helper in helpers:
            helper.join(timeout=10)
        evictions = _metric(envoy, "authz_token_cache_evictions_total")
        time.sleep(0.5)  # the last audit lines reach the log file
        assert envoy.authz.process.log_path is not None
        audit = _audit(envoy.authz.process.log_path)
        verdicts = verify(load.results, audit, figures.swaps)
        return Run(capacity, rps, paced, len(load.results), verdicts, figures, evictions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--rps", type=float, default=0, help="0: 70%% of measured capacity")
    parser.add_argument("--flip", type=float, default=3.0, help="seconds between policy changes")
    parser.add_argument("--workers", type=int, default=8, help="client threads")
    parser.add_argument("--rss-growth-mib", type=float, default=24.0)
    args = parser.parse_args(argv)
    result = soak(args)  # the processes are stopped (and their log tails printed) by now
    return 0 if _report(args, result) else 1
