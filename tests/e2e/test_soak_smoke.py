"""`make soak` for ten seconds, so the driver cannot rot between long runs."""

from __future__ import annotations

import subprocess
import sys

from tests.e2e.conftest import REPO_ROOT, child_env


def test_soak_smoke() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.soak", "--seconds", "10", "--rps", "100", "--flip", "2"],
        capture_output=True,
        text=True,
        timeout=110,
        env=child_env(),
        cwd=REPO_ROOT,
        check=False,
    )
    report = result.stdout[result.stdout.find("soak figures") :]
    print(report)
    assert result.returncode == 0, report or result.stderr[-3000:]
    assert "wrong decisions 0" in report and "soak: PASS" in report
    swaps = int(report.split(" s, ")[1].split(" policy swaps")[0])
    assert swaps >= 3
