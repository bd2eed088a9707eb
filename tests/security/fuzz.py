"""`make fuzz`: the fuzz targets coverage-guided under atheris (libFuzzer), one process each.

    python -m tests.security.fuzz --seconds 600            # every target, the time split
    python -m tests.security.fuzz --seconds 60 --targets policy

The corpus grows in .fuzz/corpus/<target> across runs (seeded from fuzz_targets.seeds);
a crash is written to .fuzz/artifacts/<target>-crash-*. Reproduce one with
`python -m tests.security.fuzz --replay FILE --targets TARGET`, then copy it into
tests/security/regressions/<target>/ so `make test` replays it for good. Exits 1 on a crash.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / ".fuzz"
TARGETS = ("token", "policy", "check", "dpop")
_RUNS = re.compile(rb"^#(\d+)\s", re.MULTILINE)


def _quiet_logs() -> None:
    """The store logs every rejected object; at thousands per second that is noise."""
    from authz.observe import logs

    logs.configure("critical")


def _fuzz(target: str, seconds: int) -> None:
    """In the child: instrument authz, then hand the target to libFuzzer until time is up."""
    import atheris

    with atheris.instrument_imports(include=["authz", "yaml", "jwt", "jsonschema"]):
        from tests.security import fuzz_targets
    _quiet_logs()
    corpus = WORK / "corpus" / target
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(fuzz_targets.seeds(target)):
        (corpus / f"seed-{i}").write_bytes(seed)
    artifacts = WORK / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.argv[0],
        f"-max_total_time={seconds}",
        f"-artifact_prefix={artifacts}/{target}-",
        "-max_len=4096",
        "-rss_limit_mb=2048",
        "-timeout=10",  # one input taking 10 s is a finding (a hang)
        "-print_final_stats=1",
        str(corpus),
    ]
    atheris.Setup(argv, fuzz_targets.TARGETS[target])
    atheris.Fuzz()


def _replay(target: str, path: Path) -> None:
    from tests.security import fuzz_targets

    fuzz_targets.TARGETS[target](path.read_bytes())
    print(f"{path}: no failure")


def _run_all(targets: list[str], seconds: int) -> int:
    share = max(1, seconds // len(targets))
    failed = False
    rows = []
    for target in targets:
        started = time.monotonic()
        command = [sys.executable, "-m", "tests.security.fuzz", "--child", target]
        child = subprocess.run(
            [*command, "--seconds", str(share)], cwd=ROOT, capture_output=True, check=False
        )
        output = child.stdout + child.stderr
        runs = max((int(n) for n in _RUNS.findall(output)), default=0)
        crashed = child.returncode != 0
        failed = failed or crashed
        corpus = len(list((WORK / "corpus" / target).glob("*")))
        rows.append((target, runs, corpus, time.monotonic() - started, crashed))
        if crashed:
            sys.stdout.write(output.decode("utf-8", "replace")[-4000:])
    print(f"{'target':8} {'execs':>10} {'corpus':>7} {'seconds':>8}  result")
    for target, runs, corpus, took, crashed in rows:
        verdict = "CRASH (see .fuzz/artifacts)" if crashed else "ok"
        print(f"{target:8} {runs:>10} {corpus:>7} {took:>8.0f}  {verdict}")
    print(
        f"fuzz: {sum(r[1] for r in rows)} executions, {'crashes found' if failed else 'no crash'}"
    )
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.security.fuzz", description=__doc__)
    parser.add_argument("--seconds", type=int, default=600, help="total, split between targets")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated")
    parser.add_argument("--replay", type=Path, help="run one input through the target")
    parser.add_argument("--child", choices=TARGETS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _fuzz(args.child, args.seconds)
        return 0
    targets = [t for t in args.targets.split(",") if t]
    if unknown := set(targets) - set(TARGETS):
        parser.error(f"unknown targets {sorted(unknown)}; choose from {', '.join(TARGETS)}")
    if args.replay:
        _replay(targets[0], args.replay)
        return 0
    return _run_all(targets, args.seconds)


if __name__ == "__main__":
    sys.exit(main())
