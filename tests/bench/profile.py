"""Where authz's time goes under load: py-spy samples of the live server (`--profile`).

py-spy reads the server's stacks from outside (no instrumentation, so the profile is of
the real process at full load) while h2load drives direct gRPC cache-hit Checks. Only
samples of the thread holding the GIL are kept (`--gil`): in a CPU-bound Python server
that is the Python work; grpc's C core threads and idle handler threads are not in it.
The collapsed stacks are summarised two ways: self time per function (where the CPU is
actually spent) and inclusive time per authz function (which of our steps cost most).
Needs `py-spy` in the venv (`pip install py-spy`) and ptrace permission.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from tests.bench import drivers
from tests.bench.runner import Bench
from tests.bench.stack import CHECK_METHOD, Server, grpc_frame

TOP = 15
# "Check (authz/server.py:57)" -> "Check (authz/server.py)": aggregate per function
_FRAME = re.compile(r"^(.*) \((.*?)(?::\d+)?\)$")


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def summarise(collapsed: str) -> dict[str, Any]:
    """Self and inclusive sample shares from py-spy's raw (collapsed-stack) output."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_FRAME.sub(r"\1 (\2)", f) for f in stack.split(";")]
        self_time[frames[-1]] += count
        for frame in set(frames):
            if "authz/" in frame:
                inclusive[frame] += count
    return {
        "samples": total,
        "self": [(f, c / total) for f, c in self_time.most_common(TOP)] if total else [],
        "authz_inclusive": [(f, c / total) for f, c in inclusive.most_common(TOP)] if total else [],
    }


def record(b: Bench, server: Server, request: Any) -> None:
    binary = py_spy()
    if binary is None:
        b.log("  profile: py-spy not installed (.venv/bin/pip install py-spy)")
        return
    seconds = max(2, b.settings.seconds // 2)
    with tempfile.TemporaryDirectory(prefix="bench-pyspy-") as tmp:
        out = Path(tmp) / "stacks.txt"
        argv = [
            binary, "record", "--pid", str(server.pid), "--duration", str(seconds),
            "--rate", "250", "--format", "raw", "--output", str(out), "--nonblocking", "--gil",
        ]  # fmt: skip
        spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        frame = grpc_frame(request)
        load = threading.Thread(
            target=drivers.grpc_h2load,
            args=(server.grpc_addr, CHECK_METHOD, frame),
            kwargs={"seconds": seconds + 1},
        )
        load.start()
        _, err = spy.communicate(timeout=seconds + 60)
        load.join()
        if spy.returncode != 0 or not out.exists():
            b.log(f"  profile: py-spy failed: {err.strip()[-300:]}")
            return
        b.profile = summarise(out.read_text())
    b.log("  profile: recorded authz under direct gRPC cache-hit load")


def table(summary: dict[str, Any]) -> str:
    lines = [
        f"py-spy profile of authz, direct gRPC cache-hit Checks "
        f"({summary['samples']} samples of the GIL-holding thread)"
    ]
    lines.append("  self time (where the CPU is spent):")
    lines += [f"    {share:6.1%}  {frame}" for frame, share in summary["self"]]
    lines.append("  inclusive, authz frames:")
    lines += [f"    {share:6.1%}  {frame}" for frame, share in summary["authz_inclusive"]]
    return "\n".join(lines)
