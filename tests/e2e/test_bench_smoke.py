"""`make bench` must keep working: a quick run of a few scenarios, end to end.

Runs the harness exactly as `make bench` does (a subprocess, real Envoy, authz, the
trivial server, wrk and h2load) in its ~1 s smoke mode, and checks the JSON it writes:
every selected row was measured with the expected answers, and target 1 got a ratio.
The numbers themselves are not asserted; a loaded CI box makes them meaningless.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = (
    "envoy_plain",
    "authz_hit",
    "authz_hit_grpc",
    "authz_http_hit",
    "trivial_grpc",
    "trivial_http_envoy",
)

pytestmark = pytest.mark.skipif(
    not (shutil.which("wrk") and shutil.which("h2load")),
    reason="wrk and h2load are needed (make bench installs them: wrk, nghttp2-client)",
)


@pytest.mark.timeout(300)
def test_quick_bench_measures_every_selected_scenario(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    env = {**os.environ, "BENCH_NO_BUILD": "1", "PYTHONPATH": str(REPO_ROOT)}
    argv = [sys.executable, "-m", "tests.bench", "--quick", "--out", str(out)]
    proc = subprocess.run(
        [*argv, "--scenarios", ",".join(SCENARIOS)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "p99.9 ms" in proc.stdout  # the table was printed

    doc = json.loads(out.read_text())
    rows = {row["scenario"]: row for row in doc["scenarios"]}
    assert set(rows) == set(SCENARIOS)
    for name, row in rows.items():
        assert row["ok"], (name, row["note"])
        assert row["load"]["requests"] > 0, name
        assert row["load"]["p50_ms"] > 0, name
        assert row["server_us"] is None or row["server_us"] > 0, name
    assert rows["authz_hit"]["envoy_us"] > 0
    assert rows["authz_hit"]["server_rss_mb"] > 0
    assert rows["trivial_http_envoy"]["server_us"] > 0  # the HTTP floor's own CPU was read
    assert rows["trivial_http_envoy"]["envoy_us"] > 0
    assert rows["authz_http_hit"]["server_us"] > 0  # authz's HTTP checks, through http_service
    first = next(t for t in doc["targets"] if t["number"] == 1)
    assert first["met"] is not None, first
    assert doc["machine"]["protobuf_backend"] == "upb"


STACK_SCENARIOS = ("handoff", "grpc_floor", "http_uvloop", "http_uvloop_max1")


@pytest.mark.timeout(240)
def test_quick_http_stacks_comparison_runs(tmp_path: Path) -> None:
    """`python -m tests.bench.http_stacks` (issue 14's stack choice) stays runnable, and
    Envoy keeps its HTTP/1.1 connections to the floor alive across checks."""
    out = tmp_path / "stacks.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.bench.http_stacks", "--quick", "--out", str(out),
         "--scenarios", ",".join(STACK_SCENARIOS)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    doc = json.loads(out.read_text())
    rows = {row["scenario"]: row for row in doc["scenarios"]}
    assert set(rows) == {"grpc_floor", "http_uvloop", "http_uvloop_max1"}
    for name, row in rows.items():
        assert row["ok"], (name, row["note"])
        assert row["server_us"] > 0, name
    # keep-alive: Envoy opens at most one connection per check in flight (32), and reuses
    # them; a check abandoned at the warm-up's end may cost a reconnect, no more
    for name in ("http_uvloop", "http_uvloop_max1"):
        counts = rows[name]["extra"]
        assert counts["upstream_cx"] <= 32, (name, counts)
        assert counts["upstream_cx"] * 50 < counts["upstream_rq"], (name, counts)
    assert {h["name"].split(",")[0] for h in doc["handoff"]} == {"inline", "executor"}
