"""What a thread hand-off from the event loop costs, against answering inline.

The HTTP transport must decide whether a request's work runs on the event loop or is
handed to a thread pool (`loop.run_in_executor`). This times both in-process on uvloop,
pinned to the server CPU, with the trivial server's `decide` as the work (so only the
hand-off is priced): `concurrency` tasks, like connections from Envoy, each handling
`requests / concurrency` requests in turn. CPU per request is the process's CPU time
(all threads) over the requests; wall per request is elapsed time over the requests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tests.bench.trivial_http_server import decide, new_loop


@dataclass(frozen=True)
class HandoffResult:
    name: str
    cpu_us: float  # process CPU (every thread) per request
    wall_us: float  # elapsed per request


async def _inline(requests: int, concurrency: int, _threads: int) -> None:
    async def connection(count: int) -> None:
        for _ in range(count):
            decide()
            await asyncio.sleep(0)  # the loop turn a real request also takes

    await asyncio.gather(*(connection(requests // concurrency) for _ in range(concurrency)))


async def _executor(requests: int, concurrency: int, threads: int) -> None:
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(threads, "decide") as pool:

        async def connection(count: int) -> None:
            for _ in range(count):
                await loop.run_in_executor(pool, decide)

        await asyncio.gather(*(connection(requests // concurrency) for _ in range(concurrency)))


VARIANTS: dict[str, Callable[[int, int, int], Coroutine[None, None, None]]] = {
    "inline": _inline,
    "executor": _executor,
}


def _time(variant: str, requests: int, concurrency: int, threads: int) -> HandoffResult:
    loop = new_loop("uvloop")
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        loop.run_until_complete(VARIANTS[variant](requests, concurrency, threads))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        loop.close()
    name = f"{variant}, {concurrency} in flight"
    if variant != "inline":
        name += f", {threads} threads"
    return HandoffResult(name, cpu / requests * 1e6, wall / requests * 1e6)


def run(quick: bool) -> list[HandoffResult]:
    """Inline and executor at 1 and 32 requests in flight."""
    requests = 4_000 if quick else 64_000
    _time("executor", 1_000, 32, 4)  # warm the imports and the allocator
    cases = [
        ("inline", 1, 1),
        ("inline", 32, 1),
        ("executor", 1, 4),
        ("executor", 32, 4),
        ("executor", 32, 16),
    ]
    return [_time(v, requests, c, t) for v, c, t in cases]


def table(results: list[HandoffResult]) -> str:
    lines = [f"{'hand-off (in-process, uvloop)':<38} {'CPU us/req':>10} {'wall us/req':>11}"]
    for r in results:
        lines.append(f"{r.name:<38} {r.cpu_us:>10.1f} {r.wall_us:>11.1f}")
    return "\n".join(lines)
