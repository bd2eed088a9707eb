"""What the machine is and what each process spent, read straight from /proc.

CPU per request is the honest cost measure on a shared 2-core box: throughput moves with
whatever else runs, CPU seconds per request much less. We read `utime+stime` of a process
*and its descendants* (a multi-worker server forks), plus the whole machine's busy time
from /proc/stat so a run can say how much CPU went to processes that are not ours.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the `(comm)` (which may contain spaces)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def process_tree(pid: int) -> list[int]:
    """`pid` and every live descendant."""
    children = _children_map()
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, ()))
    return out


def cpu_seconds(pid: int) -> float:
    """User+system CPU of `pid` and its live descendants, plus children it already reaped."""
    ticks = 0
    for member in process_tree(pid):
        fields = _stat_fields(member)
        if fields is None:
            continue
        # after `(comm)`: [0]=state ... [11]=utime [12]=stime [13]=cutime [14]=cstime
        ticks += int(fields[11]) + int(fields[12])
        if member == pid:
            ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def rss_mb(pid: int) -> float:
    """Resident set of `pid` plus its live descendants (shared pages counted per process,
    so for a forked multi-worker server this is an upper bound)."""
    pages = 0
    for member in process_tree(pid):
        fields = _stat_fields(member)
        if fields is not None:
            pages += int(fields[21])  # rss, in pages
    return pages * PAGE_KB / 1024


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores), from /proc/stat."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(argv: list[str], pattern: str = r"(\d+\.\d+(?:\.\d+)?)") -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    match = re.search(pattern, proc.stdout + proc.stderr)
    return match.group(1) if match else "unknown"


def busy_builds() -> list[str]:
    """Compilers and `go build`s running right now: their CPU competes with the benchmark."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry.name}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0]:
            continue
        name = os.path.basename(argv[0].decode(errors="replace"))
        if (name == "go" and b"build" in argv[1:3]) or name in {"compile", "link", "cc1", "gcc"}:
            found.append(f"{entry.name}:{name}")
    return found


@dataclass(frozen=True)
class Machine:
    nproc: int
    cpus_allowed: int
    cpu_model: str
    kernel: str
    python: str
    envoy: str
    wrk: str
    h2load: str
    grpcio: str
    protobuf_backend: str
    loadavg: str
    busy_builds: tuple[str, ...]

    def describe(self) -> str:
        lines = [
            f"machine: {self.nproc} CPUs ({self.cpus_allowed} usable), {self.cpu_model}, "
            f"Linux {self.kernel}, load average {self.loadavg}",
            f"software: Python {self.python}, Envoy {self.envoy}, grpcio {self.grpcio}, "
            f"protobuf backend {self.protobuf_backend}, wrk {self.wrk}, h2load {self.h2load}",
        ]
        if self.busy_builds:
            lines.append(
                f"WARNING: {len(self.busy_builds)} compiler process(es) running at start "
                "(numbers taken under that load; see the bg% column)"
            )
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def machine(envoy_binary: str) -> Machine:
    import grpc
    from google.protobuf.internal import api_implementation

    return Machine(
        nproc=os.cpu_count() or 0,
        cpus_allowed=len(os.sched_getaffinity(0)),
        cpu_model=cpu_model(),
        kernel=platform.release(),
        python=sys.version.split()[0],
        envoy=_version([envoy_binary, "--version"], r"/(\d+\.\d+\.\d+)/"),
        wrk=_version(["wrk", "--version"]),
        h2load=_version(["h2load", "--version"]),
        grpcio=grpc.__version__,
        protobuf_backend=api_implementation.Type(),
        loadavg=" ".join(Path("/proc/loadavg").read_text().split()[:3]),
        busy_builds=tuple(busy_builds()),
    )
