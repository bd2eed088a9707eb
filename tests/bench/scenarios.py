"""The scenarios, grouped into phases that share processes.

A phase starts its processes once (Envoy, and an ext_authz server where one is needed),
runs every selected scenario against them and stops them before the next phase, so two
stacks never compete for the cores. Scenario names (for --scenarios):

  envoy_plain[_open]        Envoy, direct_response, no auth (the ceiling)
  envoy_jwt_authn[_open]    Envoy's native jwt_authn, local JWKS + JWT cache (the anchor)
  authz_hit[_open|_grpc]    authz, one valid token (token-cache hit), via Envoy / direct
  authz_http_hit[_open]     the same through Envoy's http_service to authz's HTTP checks
  authz_miss_{rs256,es256,eddsa}  authz, every request a never-seen token
  deny_{missing,expired,badsig,scope}  authz deny paths via Envoy
  trivial_envoy[_open], trivial_grpc   the always-allow grpcio server (the gRPC floor)
  trivial_http_envoy[_open]  the always-allow HTTP server via Envoy http_service (HTTP floor)
  opa_envoy[_open], opa_grpc           OPA-Envoy with the equivalent Rego
  scale_p{1,100,1000}_i{1,100}         policy/issuer count, direct gRPC, cache hit
  scale_cond_p{1,1000}      the same with request conditions in every policy (issue 12)
  workers_{1,2}             `authz serve --workers N`, direct gRPC
  workers_http_{1,2}        the same serving HTTP checks (one shared socket), wrk direct
  memory_100k               RSS with 100k cached tokens and 1000 policies
  micro                     in-process: verify() vs raw cryptography, check() timings
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from tests.bench import drivers, envoy_configs, material, runtime
from tests.bench.machine import cpu_seconds, process_tree, rss_mb
from tests.bench.material import Issuer
from tests.bench.policies import (
    ALLOW_PATH,
    SCOPE_DENY_PATH,
    PolicyDir,
    policy_issuers,
    write_opa,
    write_realistic,
    write_scale,
)
from tests.bench.report import Result
from tests.bench.runner import Bench, HttpReq
from tests.bench.stack import (
    REPO_ROOT,
    Proxy,
    Server,
    Stack,
    check_request,
    child_env,
    ports_free,
)
from tests.support.procs import free_port, wait_for_addr

MISS_ALGS = ("RS256", "ES256", "EdDSA")
#: Unique tokens per cache-miss run (the run ends early if they run out): ~8 s at the
#: rates this machine reaches. Minting costs ~250 us each for RS256, ~25 us for the others.
MISS_TOKENS = {"RS256": 30_000, "ES256": 30_000, "EdDSA": 30_000}
MISS_WARMUP_TOKENS = 1_500
MEMORY_TOKENS = 100_000
SCALE_VARIANTS = ((1, 1), (100, 1), (1000, 1), (1, 100), (1000, 100))
#: Policy counts of the request-condition variant (one issuer).
CONDITION_VARIANTS = (1, 1000)


@dataclass
class Material:
    """Keys, tokens and policy directories, made on first use (only what is selected)."""

    workdir: Path
    quick: bool
    _token_files: dict[str, tuple[Path, Path]] = field(default_factory=dict)

    @cached_property
    def issuers5(self) -> list[Issuer]:
        return material.make_issuers(5)

    @cached_property
    def issuers100(self) -> list[Issuer]:
        return self.issuers5 + material.make_issuers(95, start=5)

    @cached_property
    def realistic(self) -> PolicyDir:
        return write_realistic(self.workdir / "policy-realistic", self.issuers5)

    @cached_property
    def valid(self) -> str:
        return material.mint(self.realistic.issuer)

    def unique_tokens(self, issuer: Issuer, count: int, warmup: int, tag: str) -> tuple[Path, Path]:
        """(warm-up file, measured file) of never-seen tokens, one per line."""
        if tag not in self._token_files:
            spare = drivers.spare_tokens()  # in flight when the last awaited answer arrives
            tokens = material.mint_many(issuer, warmup + count + 2 * spare, tag)
            files = (self.workdir / f"{tag}-warm.txt", self.workdir / f"{tag}.txt")
            files[0].write_text("\n".join(tokens[: warmup + spare]) + "\n")
            files[1].write_text("\n".join(tokens[warmup + spare :]) + "\n")
            self._token_files[tag] = files
        return self._token_files[tag]


def _ext_authz_proxy(stack: Stack, server: Server) -> Proxy:
    listen, admin = free_port(), free_port()
    bootstrap = envoy_configs.ext_authz(listen, admin, server.grpc_addr)
    return stack.envoy(bootstrap, listen, admin, front=True)


def envoy_phase(b: Bench, m: Material) -> None:
    if b.any_selected(["envoy_plain", "envoy_plain_open"]):
        with Stack(b.layout) as stack:
            listen, admin = free_port(), free_port()
            proxy = stack.envoy(envoy_configs.plain(listen, admin), listen, admin, front=False)
            req = HttpReq(m.realistic.host, ALLOW_PATH)
            b.http_closed("envoy_plain", proxy, None, req)
            b.http_open("envoy_plain_open", proxy, None, req, capacity_from="envoy_plain")
    if b.any_selected(["envoy_jwt_authn", "envoy_jwt_authn_open"]):
        issuer = m.realistic.issuer
        with Stack(b.layout) as stack:
            listen, admin = free_port(), free_port()
            bootstrap = envoy_configs.jwt_authn(
                listen,
                admin,
                issuer=issuer.iss,
                audience=material.AUDIENCE,
                jwks_json=json.dumps(issuer.jwks()),
            )
            proxy = stack.envoy(bootstrap, listen, admin, front=False)
            req = HttpReq(m.realistic.host, ALLOW_PATH, m.valid)
            b.http_closed("envoy_jwt_authn", proxy, None, req, note="signature+iss+aud+exp")
            b.http_open("envoy_jwt_authn_open", proxy, None, req, capacity_from="envoy_jwt_authn")


AUTHZ_SCENARIOS = (
    "authz_hit", "authz_hit_open", "authz_hit_grpc",
    "deny_missing", "deny_expired", "deny_badsig", "deny_scope",
    *(f"authz_miss_{a.lower()}" for a in MISS_ALGS),
)  # fmt: skip


def authz_phase(b: Bench, m: Material) -> None:
    if not b.any_selected(AUTHZ_SCENARIOS):
        return
    realistic = m.realistic
    host, issuer = realistic.host, realistic.issuer
    with Stack(b.layout) as stack:
        server = stack.authz(realistic.path)
        proxy = _ext_authz_proxy(stack, server)
        hit = HttpReq(host, ALLOW_PATH, m.valid)
        b.http_closed("authz_hit", proxy, server, hit, note="20 rules, 5 issuers")
        b.http_open("authz_hit_open", proxy, server, hit, capacity_from="authz_hit")
        b.grpc_closed("authz_hit_grpc", server, check_request(host, ALLOW_PATH, m.valid))
        if b.settings.profile:
            from tests.bench import profile

            profile.record(b, server, check_request(host, ALLOW_PATH, m.valid))

        denials: dict[str, tuple[str, str | None, int]] = {
            "deny_missing": (ALLOW_PATH, None, 401),
            "deny_expired": (ALLOW_PATH, material.mint(issuer, ttl=-3600), 401),
            "deny_badsig": (ALLOW_PATH, material.bad_signature(m.valid), 401),
            "deny_scope": (SCOPE_DENY_PATH, m.valid, 403),
        }
        for name, (path, token, status) in denials.items():
            b.http_closed(name, proxy, server, HttpReq(host, path, token), expect_status=status)

        for alg in MISS_ALGS:
            name = f"authz_miss_{alg.lower()}"
            if not b.settings.selected(name):
                continue
            alg_issuer = next(i for i in m.issuers5 if i.alg == alg)
            count = 600 if b.settings.quick else MISS_TOKENS[alg]
            warm = 200 if b.settings.quick else MISS_WARMUP_TOKENS
            files = m.unique_tokens(alg_issuer, count, warm, f"miss-{alg}")
            b.http_closed(
                name, proxy, server, HttpReq(host, ALLOW_PATH), token_files=files,
                note=f"{count:,} unique tokens", counters=lambda: _cache_counts(server),
                finish=_note_miss_ratio,
            )  # fmt: skip


def _note_miss_ratio(result: Result) -> None:
    """Prove the cache-miss rows missed: authz's own hit/miss counters over the run."""
    misses = result.extra.get("misses", 0.0)
    lookups = misses + result.extra.get("hits", 0.0)
    result.extra["cache_miss_ratio"] = misses / lookups if lookups else None
    result.note += f", {misses / max(lookups, 1):.0%} cache misses"


def _cache_counts(server: Server) -> dict[str, float]:
    return {
        "misses": server.metric("authz_token_cache_misses_total") or 0.0,
        "hits": server.metric("authz_token_cache_hits_total") or 0.0,
    }


AUTHZ_HTTP_SCENARIOS = ("authz_http_hit", "authz_http_hit_open")


def authz_http_phase(b: Bench, m: Material) -> None:
    """authz serving HTTP checks only, behind Envoy's `http_service` (the shipped config)."""
    if not b.any_selected(AUTHZ_HTTP_SCENARIOS):
        return
    hit = HttpReq(m.realistic.host, ALLOW_PATH, m.valid)
    with Stack(b.layout) as stack:
        server = stack.authz(m.realistic.path, transport="http")
        assert server.check_http_addr is not None
        listen, admin = free_port(), free_port()
        bootstrap = envoy_configs.authz_http(listen, admin, server.check_http_addr)
        proxy = stack.envoy(bootstrap, listen, admin, front=True)
        note = "HTTP checks, 20 rules, 5 issuers"
        b.http_closed("authz_http_hit", proxy, server, hit, note=note)
        b.http_open("authz_http_hit_open", proxy, server, hit, capacity_from="authz_http_hit")


def trivial_phase(b: Bench, m: Material) -> None:
    if not b.any_selected(["trivial_envoy", "trivial_envoy_open", "trivial_grpc"]):
        return
    req = HttpReq(m.realistic.host, ALLOW_PATH, m.valid)
    with Stack(b.layout) as stack:
        server = stack.trivial()
        proxy = _ext_authz_proxy(stack, server)
        b.http_closed("trivial_envoy", proxy, server, req, note="always-allow grpcio")
        b.http_open("trivial_envoy_open", proxy, server, req, capacity_from="trivial_envoy")
        b.grpc_closed("trivial_grpc", server, check_request(m.realistic.host, ALLOW_PATH, m.valid))


TRIVIAL_HTTP_SCENARIOS = ("trivial_http_envoy", "trivial_http_envoy_open")


def trivial_http_phase(b: Bench, m: Material) -> None:
    """The HTTP floor: tests.bench.trivial_http_server behind Envoy's `http_service`."""
    if not b.any_selected(TRIVIAL_HTTP_SCENARIOS):
        return
    req = HttpReq(m.realistic.host, ALLOW_PATH, m.valid)
    with Stack(b.layout) as stack:
        server = stack.trivial_http()
        assert server.check_http_addr is not None
        listen, admin = free_port(), free_port()
        bootstrap = envoy_configs.ext_authz_http(listen, admin, server.check_http_addr)
        proxy = stack.envoy(bootstrap, listen, admin, front=True)
        note = "always-allow uvloop+httptools, HTTP/1.1"
        b.http_closed("trivial_http_envoy", proxy, server, req, note=note)
        # At the gRPC floor's open-loop rate, so the two floors' p99 and CPU compare at equal
        # load. (Half its own capacity would not be half load: h2load's HTTP/2 costs Envoy
        # about twice what wrk's HTTP/1.1 does, and this row is bound by Envoy's CPU.)
        grpc_open = b.results.get("trivial_envoy_open")
        rate = grpc_open.load.target_rps if grpc_open and grpc_open.load else None
        b.http_open(
            "trivial_http_envoy_open", proxy, server, req, capacity_from="trivial_http_envoy",
            rps=rate, note="at trivial_envoy_open's rate" if rate else "50% load",
        )  # fmt: skip


def opa_binary() -> Path:
    """opa-envoy-plugin from the shared Go test-binary cache; BENCH_NO_BUILD=1 refuses to
    start a build (minutes on 2 cores) and uses the binary only if it is already there."""
    from tests.support import testbin

    if os.environ.get("BENCH_NO_BUILD"):
        built = testbin.binary_path(testbin.TOOLS["opa-envoy"])
        if not built.is_file():
            raise FileNotFoundError(f"{built} not built (BENCH_NO_BUILD is set)")
        return built
    return testbin.path("opa-envoy")


OPA_SCENARIOS = ("opa_envoy", "opa_envoy_open", "opa_grpc")


def opa_phase(b: Bench, m: Material) -> None:
    if not b.any_selected(OPA_SCENARIOS):
        return
    b.log("  (opa-envoy-plugin: building it first if it is not cached yet)")
    try:
        binary = opa_binary()
    except Exception as exc:
        for name in OPA_SCENARIOS:
            b.skip(name, "-", f"n/a: opa-envoy unavailable: {str(exc).splitlines()[0][:120]}")
        return
    rego, data = write_opa(m.workdir / "opa", m.issuers5)
    req = HttpReq(m.realistic.host, ALLOW_PATH, m.valid)
    with Stack(b.layout) as stack:
        server = stack.opa(binary, rego, data, m.workdir)
        proxy = _ext_authz_proxy(stack, server)
        b.http_closed("opa_envoy", proxy, server, req, note="same 20 rules in Rego")
        b.http_open("opa_envoy_open", proxy, server, req, capacity_from="opa_envoy")
        b.grpc_closed("opa_grpc", server, check_request(m.realistic.host, ALLOW_PATH, m.valid))


def scale_phase(b: Bench, m: Material) -> None:
    for policies, issuers in SCALE_VARIANTS:
        name = f"scale_p{policies}_i{issuers}"
        memory = (policies, issuers) == (1000, 100) and b.settings.selected("memory_100k")
        if not (b.settings.selected(name) or memory):
            continue
        chosen = m.issuers5[:1] if issuers == 1 else m.issuers100
        b.log(f"  ({name}: writing and loading {policies} policies, {issuers} issuers)")
        pdir = write_scale(m.workdir / f"policy-{name}", chosen, policies)
        if b.settings.selected(name):
            token = material.mint(pdir.issuer)
            with Stack(b.layout) as stack:
                server = stack.authz(pdir.path)
                b.grpc_closed(
                    name,
                    server,
                    check_request(pdir.host, ALLOW_PATH, token),
                    note=f"{policies} policies x 20 rules",
                )
        if memory:
            memory_phase(b, m, pdir)


def conditions_phase(b: Bench, m: Material) -> None:
    """1 and 1000 policies whose rules carry request conditions (headers, addresses, the
    mTLS peer, the client certificate, negations): the cache-hit Check walks five failing
    conditioned rules and one whose conditions hold before it allows."""
    for policies in CONDITION_VARIANTS:
        name = f"scale_cond_p{policies}"
        if not b.settings.selected(name):
            continue
        b.log(f"  ({name}: writing and loading {policies} policies with conditions)")
        pdir = write_scale(m.workdir / f"policy-{name}", m.issuers5[:1], policies, conditions=True)
        token = material.mint(pdir.issuer)
        with Stack(b.layout) as stack:
            server = stack.authz(pdir.path)
            b.grpc_closed(
                name,
                server,
                check_request(pdir.host, ALLOW_PATH, token),
                note=f"{policies} policies x 25 rules with conditions",
            )


def memory_phase(b: Bench, m: Material, pdir: PolicyDir) -> None:
    """authz on the image's packages (tests.bench.runtime), filled by `memory_fill`; on the
    development venv, saying so, if that environment cannot be built here."""
    try:
        python: Path | None = runtime.image_python(b.log)
        where = "image's packages"
    except Exception as exc:
        python, where = None, f"dev venv (image env unavailable: {str(exc).splitlines()[0][:80]})"
    with Stack(b.layout) as stack:
        server = stack.authz(pdir.path, python=python)
        memory_fill(b, m, stack, server, pdir, where)


def memory_fill(
    b: Bench, m: Material, stack: Stack, server: Server, pdir: PolicyDir, where: str
) -> None:
    """Send MEMORY_TOKENS never-seen tokens through Envoy, then read authz's RSS."""
    trusted = policy_issuers(pdir.policies // 2, m.issuers100)
    issuer = next((i for i in trusted if i.alg == "EdDSA"), trusted[0])  # cheapest to mint
    count = 3_000 if b.settings.quick else MEMORY_TOKENS
    b.log(f"  (memory_100k: minting {count:,} {issuer.alg} tokens)")
    _warm, tokens = m.unique_tokens(issuer, count, 1, "memory")
    proxy = _ext_authz_proxy(stack, server)
    before = cpu_seconds(proxy.pid), cpu_seconds(server.pid)
    load = drivers.wrk(proxy.url(), ALLOW_PATH, pdir.host, seconds=900, token_file=tokens)
    envoy_s, server_s = cpu_seconds(proxy.pid) - before[0], cpu_seconds(server.pid) - before[1]
    entries = server.metric("authz_token_cache_entries") or 0.0
    result = Result(
        "memory_100k",
        f"wrk c{drivers.CONNECTIONS}",
        load,
        envoy_us=envoy_s / max(load.requests, 1) * 1e6,
        server="authz",
        server_us=server_s / max(load.requests, 1) * 1e6,
        server_rss_mb=rss_mb(server.pid),
        ok=load.errors == 0 and load.statuses.get("2xx", 0) == load.requests,
        note=f"{entries:,.0f} tokens cached, {pdir.policies} policies, {pdir.issuers} issuers"
        f", all cache misses (EdDSA); {where}",
        extra={"cache_entries": entries},
    )
    b.record(result)


def workers_supported() -> bool:
    out = subprocess.run(
        [sys.executable, "-m", "authz", "serve", "--help"],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )
    return "--workers" in out.stdout


WORKER_SCENARIOS = ("workers_1", "workers_2", "workers_http_1", "workers_http_2")
WORKER_ROUNDS = 3


def worker_addresses(count: int) -> tuple[int, list[str]]:
    """A shared gRPC port and each worker's own address, as `authz.workers` derives them
    (asked of authz itself, so a change of its port scheme cannot silently break this)."""
    from authz.workers import Worker, own_address

    for _ in range(50):
        port = free_port()
        own = [own_address(f"127.0.0.1:{port}", Worker(i, count)) for i in range(count)]
        if ports_free([int(a.rpartition(":")[2]) for a in own]):
            return port, own
    raise OSError("no free ports for the workers")


def workers_phase(b: Bench, m: Material) -> None:
    """1 worker vs 2 with the same 32 Checks in flight; with 2 workers, half on each
    worker's own port, so the split is exact rather than left to SO_REUSEPORT hashing."""
    if not b.any_selected(WORKER_SCENARIOS):
        return
    if not workers_supported():
        for name in WORKER_SCENARIOS:
            b.skip(name, "-", "n/a: --workers not implemented")
        return
    request = check_request(m.realistic.host, ALLOW_PATH, m.valid)
    for n in (1, 2):
        name = f"workers_{n}"
        if not b.settings.selected(name):
            continue
        port, own = worker_addresses(n) if n > 1 else (free_port(), [])
        with Stack(b.layout) as stack:
            # one worker: on the server CPU like every other server here; two: authz pins
            # its own workers, one per core, and the load generator has no core to itself
            pinned = n == 1
            server = stack.authz(
                m.realistic.path, ["--workers", str(n)], grpc_port=port, pinned=pinned
            )
            for addr in own:
                wait_for_addr(addr, 60.0, proc=server.process)
            note = "pinned by authz; one h2load per worker port" if own else "pinned"
            b.grpc_closed(
                name, server, request, clients=drivers.H2_CLIENTS // max(1, len(own)),
                addrs=own, note=note,
            )  # fmt: skip
    workers_http_phase(b, m)


def workers_http_phase(b: Bench, m: Material) -> None:
    """1 worker vs 2 serving HTTP checks, wrk straight at the check port. Both servers run
    side by side and are measured in turn, round after round, each row keeping its best
    round: the machine is shared, and a neighbour's burst on one core halves one run."""
    names = {n: f"workers_http_{n}" for n in (1, 2) if b.settings.selected(f"workers_http_{n}")}
    if not names:
        return
    hit = HttpReq(m.realistic.host, ALLOW_PATH, m.valid)
    best: dict[int, Result] = {}
    with Stack(b.layout) as stack:
        servers = {
            n: stack.authz(m.realistic.path, ["--workers", str(n)], pinned=n == 1, transport="http")
            for n in names
        }
        for _ in range(1 if b.settings.quick else WORKER_ROUNDS):
            for n, server in servers.items():
                if n == 1:
                    result = b.http_direct_closed(
                        names[n], server, hit, note="pinned", record=False
                    )
                else:
                    result = b.http_direct_closed(
                        names[n], server, hit, record=False,
                        note="pinned by authz; the supervisor hands out connections",
                        counters=lambda s=server: _worker_counts(s), finish=_note_worker_split,
                    )  # fmt: skip
                assert result is not None
                kept = best.get(n)
                if kept is None or (result.ok and _rps(result) > _rps(kept)) or not kept.ok:
                    best[n] = result
    for n in names:
        rounds = 1 if b.settings.quick else WORKER_ROUNDS
        best[n].note += f" (best of {rounds} rounds, interleaved)" if rounds > 1 else ""
        b.record(best[n])


def _rps(result: Result) -> float:
    return result.load.rps if result.load is not None else 0.0


def _worker_counts(server: Server) -> dict[str, float]:
    """Per worker: HTTP check connections handed to it, decisions, CPU seconds (the
    supervisor's children in start order), so a row can show how the work was split."""
    out: dict[str, float] = {}
    for metric, key in (
        ("authz_worker_http_connections_total", "connections"),
        ("authz_decisions_total", "decisions"),
    ):
        out.update({f"{key}_w{w}": v for w, v in server.metric_by_worker(metric).items()})
    children = sorted(p for p in process_tree(server.pid) if p != server.pid)
    out.update({f"cpu_s_w{i}": cpu_seconds(pid) for i, pid in enumerate(children)})
    return out


def _note_worker_split(result: Result) -> None:
    """How the measured run was split: the connections the supervisor handed each worker,
    each one's share of the requests and the CPU it got. The load generator, the kernel and
    anything else running share these two cores, so a worker's requests follow the CPU it
    got, and what the workers got is the context of the row's requests/s."""
    load = result.load
    if load is None or not load.seconds:
        return

    def per_worker(prefix: str) -> list[float]:
        return [v for k, v in sorted(result.extra.items()) if k.startswith(prefix)]

    connections, decisions = per_worker("connections_w"), per_worker("decisions_w")
    cores = [v / load.seconds for v in per_worker("cpu_s_w")]
    if sum(connections):  # 1.0: every worker was handed as many as the mean
        result.extra["connection_balance"] = min(connections) * len(connections) / sum(connections)
    result.extra["worker_cores"] = cores
    requests = "/".join(f"{v / sum(decisions):.0%}" for v in decisions) if sum(decisions) else "-"
    result.note += (
        f"; connections {'+'.join(f'{v:.0f}' for v in connections)}, requests {requests}, "
        f"workers got {'+'.join(f'{c:.2f}' for c in cores)} cores"
    )


Phase = Callable[[Bench, Material], None]

#: Each phase with the scenarios it may record, in run order.
PHASES: tuple[tuple[Phase, tuple[str, ...]], ...] = (
    (envoy_phase, ("envoy_plain", "envoy_plain_open", "envoy_jwt_authn", "envoy_jwt_authn_open")),
    (authz_phase, AUTHZ_SCENARIOS),
    (authz_http_phase, AUTHZ_HTTP_SCENARIOS),
    (trivial_phase, ("trivial_envoy", "trivial_envoy_open", "trivial_grpc")),
    (trivial_http_phase, TRIVIAL_HTTP_SCENARIOS),
    (opa_phase, OPA_SCENARIOS),
    (scale_phase, (*(f"scale_p{p}_i{i}" for p, i in SCALE_VARIANTS), "memory_100k")),
    (conditions_phase, tuple(f"scale_cond_p{p}" for p in CONDITION_VARIANTS)),
    (workers_phase, WORKER_SCENARIOS),
)


def run_phases(b: Bench, m: Material) -> None:
    """Every phase in turn; one that breaks (a server that will not start, say) marks its
    unfinished scenarios failed with the reason, and the run goes on with the next."""
    for phase, names in PHASES:
        try:
            phase(b, m)
        except Exception as exc:
            lines = str(exc).splitlines() or [type(exc).__name__]
            b.log(f"  {phase.__name__} failed: {lines[0]}")
            b.log("\n".join(f"    | {line}" for line in lines[1:][-15:]))
            for name in names:
                if b.settings.selected(name) and name not in b.results:
                    b.record(Result(name, "-", ok=False, note=f"failed: {lines[0][:100]}"))


ALL_SCENARIOS = (
    "micro",
    "envoy_plain", "envoy_plain_open", "envoy_jwt_authn", "envoy_jwt_authn_open",
    "authz_hit", "authz_hit_open", "authz_hit_grpc",
    "deny_missing", "deny_expired", "deny_badsig", "deny_scope",
    "authz_miss_rs256", "authz_miss_es256", "authz_miss_eddsa", *AUTHZ_HTTP_SCENARIOS,
    "trivial_envoy", "trivial_envoy_open", "trivial_grpc", *TRIVIAL_HTTP_SCENARIOS,
    "opa_envoy", "opa_envoy_open", "opa_grpc",
    *(f"scale_p{p}_i{i}" for p, i in SCALE_VARIANTS),
    *(f"scale_cond_p{p}" for p in CONDITION_VARIANTS),
    "memory_100k", *WORKER_SCENARIOS,
)  # fmt: skip
