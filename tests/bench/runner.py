"""Measure one scenario: prove the answer, warm up, then load while reading /proc.

Every scenario follows the same four steps, so rows are comparable:

1. one real request (HTTP through Envoy, or a gRPC Check) must get the expected answer,
   otherwise the row is marked not ok instead of timing an error path;
2. a warm-up run of the same driver (caches, connection pools, lazily built objects);
3. CPU counters of Envoy, the server and the machine, then the measured run, then the
   counters again: CPU per request = delta / requests completed;
4. the server's RSS after the run.
"""

from __future__ import annotations

import fnmatch
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bench import drivers
from tests.bench.drivers import DriverError, LoadResult
from tests.bench.layout import Layout
from tests.bench.machine import cpu_seconds, machine_busy_seconds, rss_mb
from tests.bench.report import Result
from tests.bench.stack import CHECK_METHOD, Proxy, Server, grpc_frame
from tests.support.procs import http_request


@dataclass(frozen=True)
class HttpReq:
    """The request a through-Envoy scenario sends: Host, path and bearer token (or none)."""

    host: str
    path: str
    token: str | None = None


@dataclass
class Settings:
    seconds: int  # measured run per scenario
    warmup: int  # warm-up run per scenario
    quick: bool
    patterns: Sequence[str] = ()  # --scenarios: names or fnmatch globs; empty: all
    profile: bool = False
    pin: bool = True  # see tests.bench.layout

    def selected(self, name: str) -> bool:
        return not self.patterns or any(fnmatch.fnmatchcase(name, p) for p in self.patterns)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Bench:
    """The run's settings, work directory and the rows measured so far."""

    settings: Settings
    workdir: Path
    layout: Layout = field(default_factory=Layout)
    results: dict[str, Result] = field(default_factory=dict)
    log: Callable[[str], None] = print
    profile: dict[str, Any] | None = None  # filled by --profile

    def any_selected(self, names: Sequence[str]) -> bool:
        return any(self.settings.selected(n) for n in names)

    def record(self, result: Result) -> Result:
        self.results[result.scenario] = result
        load = result.load
        summary = f"{load.rps:,.0f} rps" if load else "skipped"
        self.log(f"  {result.scenario:<24} {summary:>12}  {result.note}")
        return result

    def skip(self, name: str, driver: str, why: str) -> None:
        if self.settings.selected(name):
            self.record(Result(name, driver, ok=False, skipped=True, note=why))

    # -- measuring ---------------------------------------------------------------------------

    def measure(
        self,
        name: str,
        driver: str,
        run: Callable[[int], LoadResult],
        *,
        proxy: Proxy | None,
        server: Server | None,
        expect: str,
        warm: Callable[[int], LoadResult] | None = None,
        note: str = "",
        counters: Callable[[], dict[str, float]] | None = None,
    ) -> Result:
        """Warm up with `warm` (default: `run`), then measure `run(seconds)`.
        `expect` is the status class every response must have ("2xx", "4xx", "non-2xx").
        `counters` (e.g. authz's cache hits and misses) are read around the measured run
        only, and their deltas land in `result.extra`."""
        (warm or run)(self.settings.warmup)
        counted = counters() if counters else {}
        pids = {"envoy": proxy.pid if proxy else None, "server": server.pid if server else None}
        before = {k: cpu_seconds(p) for k, p in pids.items() if p is not None}
        busy_before, wall_before = machine_busy_seconds(), time.monotonic()
        load = run(self.settings.seconds)
        busy = machine_busy_seconds() - busy_before
        wall = time.monotonic() - wall_before
        spent = {k: cpu_seconds(p) - before[k] for k, p in pids.items() if p is not None}
        deltas = {k: v - counted[k] for k, v in counters().items()} if counters else {}
        per_request = {k: v / load.requests * 1e6 for k, v in spent.items() if load.requests}
        others = max(0.0, busy - sum(spent.values()) - load.client_cpu_s)
        result = Result(
            name,
            driver,
            load,
            envoy_us=per_request.get("envoy"),
            server=server.name if server else None,
            server_us=per_request.get("server"),
            server_rss_mb=rss_mb(server.pid) if server else None,
            bg_pct=others / (wall * (os.cpu_count() or 1)) * 100,
            note=note,
            extra=deltas,
        )
        if load.errors or load.statuses.get(expect, 0) != load.requests:
            result.ok = False
            result.note = f"{note}; answers {load.statuses}, errors {load.errors}".lstrip("; ")
        return result

    # -- scenario shapes -----------------------------------------------------------------------

    def http_closed(
        self,
        name: str,
        proxy: Proxy,
        server: Server | None,
        req: HttpReq,
        *,
        expect_status: int = 200,
        token_files: tuple[Path, Path] | None = None,
        note: str = "",
        counters: Callable[[], dict[str, float]] | None = None,
        finish: Callable[[Result], None] | None = None,
    ) -> Result | None:
        """wrk through Envoy. `token_files` = (warm-up, measured) files of unique tokens;
        `finish` may annotate the measured row (from its counter deltas) before it is kept."""
        if not self.settings.selected(name):
            return None
        probe_token = req.token
        if token_files is not None:
            probe_token = token_files[0].read_text().split("\n", 1)[0]
        status = proxy.status(req.path, req.host, probe_token)
        if status != expect_status:
            return self.record(
                Result(name, "wrk", ok=False, note=f"probe got {status}, want {expect_status}")
            )

        def run(seconds: int, which: int = 1) -> LoadResult:
            files = token_files[which] if token_files else None
            return drivers.wrk(
                proxy.url(), req.path, req.host, seconds=seconds, token=req.token, token_file=files
            )

        driver = f"wrk c{drivers.CONNECTIONS}"
        try:
            result = self.measure(
                name,
                driver,
                run,
                proxy=proxy,
                server=server,
                expect="2xx" if expect_status < 300 else "non-2xx",
                warm=(lambda s: run(s, 0)) if token_files else None,
                note=note,
                counters=counters,
            )
        except DriverError as exc:
            result = Result(name, driver, ok=False, note=str(exc).splitlines()[0])
        else:
            if finish is not None:
                finish(result)
        return self.record(result)

    def http_direct_closed(
        self,
        name: str,
        server: Server,
        req: HttpReq,
        *,
        note: str = "",
        counters: Callable[[], dict[str, float]] | None = None,
        finish: Callable[[Result], None] | None = None,
        record: bool = True,
    ) -> Result | None:
        """wrk straight at the server's HTTP check port, as Envoy's http_service asks:
        `/check/envoy` + the original path, the original Host and Authorization.
        `counters` and `finish` as for `http_closed`; `record=False` returns the row
        without keeping it (the caller keeps the best of several rounds)."""
        if not self.settings.selected(name):
            return None
        assert server.check_http_addr is not None
        url, path = f"http://{server.check_http_addr}", "/check/envoy" + req.path
        headers = {"host": req.host}
        if req.token is not None:
            headers["authorization"] = f"Bearer {req.token}"
        status = http_request(url, "GET", path, headers).status
        if status != 200:
            failed = Result(name, "wrk", ok=False, note=f"probe got {status}")
            return self.record(failed) if record else failed

        def run(seconds: int) -> LoadResult:
            return drivers.wrk(url, path, req.host, seconds=seconds, token=req.token)

        driver = f"wrk c{drivers.CONNECTIONS} direct"
        try:
            result = self.measure(
                name, driver, run, proxy=None, server=server, expect="2xx", note=note,
                counters=counters,
            )  # fmt: skip
        except DriverError as exc:
            result = Result(name, driver, ok=False, note=str(exc).splitlines()[0])
        else:
            if finish is not None:
                finish(result)
        return self.record(result) if record else result

    def http_open(
        self,
        name: str,
        proxy: Proxy,
        server: Server | None,
        req: HttpReq,
        *,
        capacity_from: str = "",
        rps: float | None = None,
        note: str = "fixed rate",
    ) -> Result | None:
        """h2load at a fixed rate: `rps` (rows of different servers compare at equal load),
        or else half of the closed-loop capacity of `capacity_from`."""
        if not self.settings.selected(name):
            return None
        if rps is not None:
            target = round(rps)
        else:
            capacity = self.results.get(capacity_from)
            if capacity is None or capacity.load is None:  # not selected: a short probe
                probe = drivers.wrk(
                    proxy.url(), req.path, req.host, seconds=self.settings.warmup, token=req.token
                )
                capacity_rps = probe.rps
            else:
                capacity_rps = capacity.load.rps
            target, note = round(capacity_rps * 0.5), "50% load"
        headers = {":authority": req.host}  # h2load ignores a plain `host` header
        if req.token is not None:
            headers["authorization"] = f"Bearer {req.token}"

        def run(seconds: int) -> LoadResult:
            return drivers.h2load(proxy.url(req.path), seconds=seconds, headers=headers, rps=target)

        driver = f"h2load rate {target}"
        try:
            result = self.measure(
                name, driver, run, proxy=proxy, server=server, expect="2xx", note=note
            )
        except DriverError as exc:
            result = Result(name, driver, ok=False, note=str(exc).splitlines()[0])
        return self.record(result)

    def grpc_closed(
        self,
        name: str,
        server: Server,
        request: Any,
        *,
        expect_code: int = 0,
        clients: int = drivers.H2_CLIENTS,
        streams: int = drivers.H2_STREAMS,
        note: str = "",
        addrs: Sequence[str] = (),
    ) -> Result | None:
        """h2load straight at the server's gRPC port (or at each of `addrs` at once, with
        `clients` connections each), the same Check on every stream."""
        if not self.settings.selected(name):
            return None
        try:
            code = server.check(request).status.code
        except Exception as exc:
            return self.record(Result(name, "h2load grpc", ok=False, note=f"probe failed: {exc}"))
        if code != expect_code:
            return self.record(Result(name, "h2load grpc", ok=False, note=f"probe got code {code}"))
        frame = grpc_frame(request)

        def run(seconds: int) -> LoadResult:
            return drivers.grpc_h2load(
                list(addrs) or server.grpc_addr,
                CHECK_METHOD,
                frame,
                seconds=seconds,
                clients=clients,
                streams=streams,
            )

        driver = f"h2load grpc c{clients * max(1, len(addrs))}m{streams}"
        try:
            result = self.measure(
                name, driver, run, proxy=None, server=server, expect="2xx", note=note
            )
        except DriverError as exc:
            result = Result(name, driver, ok=False, note=str(exc).splitlines()[0])
        return self.record(result)
