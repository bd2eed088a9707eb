"""Which CPUs each process may run on: the system under test gets a core of its own.

On a 2-core box an unpinned Python gRPC server migrates between cores, fights the load
generator for them and varies by 20-30% from run to run, which drowns the 1.1x-1.25x
ratios the targets are about. So by default:

* CPU A: the server under test (authz, the trivial server, OPA-Envoy; Envoy itself when
  it is what is measured),
* CPU B: the load generator, and Envoy when it sits in front of an ext_authz server,

with a third CPU, if there is one, given to the load generator alone. Every authorizer
gets one core, which is also how `authz serve --workers` deploys (one pinned process per
core). `--workers 2` is left unpinned here because it pins its own workers.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.bench.machine import process_tree

CPUs = frozenset[int]


@dataclass(frozen=True)
class Layout:
    server: CPUs | None = None  # the system under test
    front: CPUs | None = None  # Envoy in front of an ext_authz server
    driver: CPUs | None = None  # wrk and h2load

    @property
    def pinned(self) -> bool:
        return self.server is not None

    def describe(self) -> str:
        if not self.pinned:
            return "CPU layout: nothing pinned"
        return (
            f"CPU layout: system under test on CPU {_cpus(self.server)}; Envoy in front of "
            f"an authorizer on CPU {_cpus(self.front)}; load generators on CPU "
            f"{_cpus(self.driver)} (--no-pin to disable)"
        )


def _cpus(cpus: Iterable[int] | None) -> str:
    return ",".join(str(c) for c in sorted(cpus or ()))


def make_layout(pin: bool) -> Layout:
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return Layout()
    first, second = frozenset(cpus[:1]), frozenset(cpus[1:2])
    driver = frozenset(cpus[2:]) if len(cpus) > 2 else second
    return Layout(server=first, front=second, driver=driver)


def taskset(cpus: CPUs | None) -> list[str]:
    """An argv prefix that starts a command on `cpus` (nothing when unpinned)."""
    return ["taskset", "-c", _cpus(cpus)] if cpus else []


@contextlib.contextmanager
def running_on(cpus: CPUs | None) -> Iterator[None]:
    """Run this process on `cpus` for the `with` body (the in-process microbenchmarks)."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def pin_tree(pid: int, cpus: CPUs | None) -> None:
    """Pin every thread of `pid` and its descendants (for processes we cannot start under
    taskset, like the Envoy that EnvoyProcess launches). Threads created later inherit."""
    if not cpus:
        return
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{member}/task").iterdir():
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(task.name), cpus)
