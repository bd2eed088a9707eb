"""Side by side: server variants measured interleaved in one run, best of N rounds.

On a shared 2-core machine a full `make bench` moves by 10-30% between runs, which hides
the few-percent effect of one optimisation. This runs each variant in turn, round after
round (the order alternates), with `make bench`'s pinning, drivers and CPU accounting,
and prints per variant the best and median server CPU per request and requests/s:

    python -m tests.bench.compare --variant base=HEAD~1 --variant new=. --variant trivial \\
        --modes grpc,grpc_direct,http --rounds 3 --seconds 5

A variant is `trivial` (the gRPC floor, or the HTTP floor in the http modes), or
`NAME=SOURCE`: authz from SOURCE, a directory holding the `authz` package (`.` is this
worktree) or a git ref (its `authz/` is exported to a temporary directory).
`--args NAME="..."` adds `authz serve` arguments (or the trivial server's) to one variant.
Modes: `grpc` (wrk through Envoy's grpc_service), `grpc_direct` (h2load gRPC straight at
the server), `http` (wrk through Envoy's http_service), `http_direct` (wrk at the HTTP
check port). Every request is the bench's cache-hit Check (one valid token, 20 rules).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.bench import drivers, envoy_configs
from tests.bench.layout import make_layout
from tests.bench.policies import ALLOW_PATH
from tests.bench.report import Result
from tests.bench.runner import Bench, HttpReq, Settings
from tests.bench.scenarios import Material
from tests.bench.stack import REPO_ROOT, Server, Stack, check_request
from tests.support.procs import free_port

MODES = ("grpc", "grpc_direct", "http", "http_direct")


@dataclass(frozen=True)
class Variant:
    name: str
    source: Path | None  # None: the trivial server of the mode
    args: tuple[str, ...] = ()


def export_ref(ref: str, into: Path) -> Path:
    """`authz/` as of git `ref`, in a directory of its own."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", ref, "authz"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def parse_variants(specs: list[str], args: list[str], tmp: Path) -> list[Variant]:
    extra: dict[str, tuple[str, ...]] = {}
    for spec in args:
        name, _, text = spec.partition("=")
        extra[name] = tuple(shlex.split(text))
    out = []
    for spec in specs:
        name, _, where = spec.partition("=")
        if not where:
            out.append(Variant(name, None, extra.get(name, ())))
            continue
        path = Path(where)
        source = path.resolve() if path.is_dir() else export_ref(where, tmp / name)
        out.append(Variant(name, source, extra.get(name, ())))
    return out


def run_one(b: Bench, m: Material, variant: Variant, mode: str, label: str) -> Result | None:
    """One measured row of `variant` in `mode`, its processes started and stopped here."""
    http = mode.startswith("http")
    req = HttpReq(m.realistic.host, ALLOW_PATH, m.valid)
    with Stack(b.layout) as stack:
        server: Server
        if variant.source is None:
            server = stack.trivial_http(variant.args) if http else stack.trivial(variant.args)
        else:
            server = stack.authz(
                m.realistic.path,
                variant.args,
                transport="http" if http else "grpc",
                source=variant.source,
            )
        listen, admin = free_port(), free_port()
        if mode == "grpc":
            bootstrap = envoy_configs.ext_authz(listen, admin, server.grpc_addr)
        elif mode == "http":
            assert server.check_http_addr is not None
            config = envoy_configs.ext_authz_http if variant.source is None else None
            bootstrap = (config or envoy_configs.authz_http)(listen, admin, server.check_http_addr)
        if mode in ("grpc", "http"):
            proxy = stack.envoy(bootstrap, listen, admin, front=True)
            return b.http_closed(label, proxy, server, req)
        if mode == "grpc_direct":
            return b.grpc_closed(label, server, check_request(req.host, req.path, req.token))
        return b.http_direct_closed(label, server, req)


def summary(rows: dict[str, list[Result]]) -> str:
    lines = [
        f"{'variant/mode':<28} {'server us best':>14} {'median':>8} {'rps best':>9} "
        f"{'median':>8} {'envoy us':>8} {'bg%':>5}"
    ]
    for key, results in rows.items():
        ok = [r for r in results if r.ok and r.load is not None and r.server_us is not None]
        if not ok:
            lines.append(f"{key:<28} failed: {[r.note for r in results]}")
            continue
        us = [r.server_us for r in ok if r.server_us is not None]
        rps = [r.load.rps for r in ok if r.load is not None]
        envoy = [r.envoy_us for r in ok if r.envoy_us is not None]
        bg = [r.bg_pct for r in ok if r.bg_pct is not None]
        lines.append(
            f"{key:<28} {min(us):>14.1f} {statistics.median(us):>8.1f} {max(rps):>9,.0f} "
            f"{statistics.median(rps):>8,.0f} "
            f"{statistics.median(envoy) if envoy else 0:>8.1f} "
            f"{statistics.median(bg) if bg else 0:>5.0f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--variant", action="append", required=True, help="NAME[=SOURCE]")
    parser.add_argument("--args", action="append", default=[], help='NAME="serve args"')
    parser.add_argument("--modes", default="grpc,grpc_direct")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {MODES}")

    from authz.observe import logs

    logs.configure("error")
    layout = make_layout(True)
    drivers.use_cpus(layout.driver)
    with tempfile.TemporaryDirectory(prefix="authz-compare-") as tmp:
        variants = parse_variants(args.variant, args.args, Path(tmp))
        settings = Settings(args.seconds, args.warmup, False)
        b = Bench(settings, Path(tmp), layout)
        m = Material(Path(tmp), quick=False)
        rows: dict[str, list[Result]] = {f"{v.name}/{mode}": [] for mode in modes for v in variants}
        for round_ in range(args.rounds):
            order = variants if round_ % 2 == 0 else variants[::-1]
            for mode in modes:
                for variant in order:
                    label = f"{variant.name}/{mode}/{round_}"
                    try:
                        result = run_one(b, m, variant, mode, label)
                    except Exception as exc:  # a variant that will not start: say so, go on
                        note = f"failed: {str(exc).splitlines()[0][:100]}"
                        result = Result(label, "-", ok=False, note=note)
                    if result is not None:
                        rows[f"{variant.name}/{mode}"].append(result)
        print(summary(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
