"""Fixtures for end-to-end tests: real `authz serve`, the echo upstream and Envoy.

Factories (call them with a policy directory; everything started is stopped at teardown):

    def test_x(envoy_stack):
        stack = envoy_stack(policy_dir)             # authz + upstream + Envoy, all on free ports
        resp = stack.get("/orders/1", token=jwt)    # or stack.request(method, path, headers, body)
        assert resp.status == 200
        assert resp.upstream_headers["x-auth-subject"] == "alice"   # what the upstream saw

    def test_y(authz_server):
        srv = authz_server(policy_dir)              # just authz; srv.grpc_addr, srv.http_url

``authz_server``, ``echo_upstream`` and ``envoy_stack`` are function scoped;
``authz_server_module`` / ``envoy_stack_module`` are the same factories with module scope
(for a test module that shares one stack). Every test under tests/e2e is marked ``e2e``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

from tests.support.browser import Browser  # noqa: E402
from tests.support.caddy import CaddyServer  # noqa: E402
from tests.support.envoy import DEFAULT_POLICY_ROUTES, EnvoyProcess, envoy_bootstrap  # noqa: E402
from tests.support.hydra import HydraServer  # noqa: E402
from tests.support.nginx import NginxServer  # noqa: E402
from tests.support.procs import (  # noqa: E402
    HttpResponse,
    Process,
    free_port,
    http_request,
    wait_for_addr,
    wait_for_http,
)
from tests.support.redis import RedisServer  # noqa: E402

UPSTREAM_SCRIPT = REPO_ROOT / "examples" / "upstream.py"
STARTUP_TIMEOUT = 20.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    e2e_dir = Path(__file__).parent
    for item in items:
        if e2e_dir in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.e2e)


# -- commands ------------------------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    """Environment for children: this repo importable, unbuffered output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def authz_command() -> list[str]:
    """How to run the CLI: ``$AUTHZ_E2E_CMD`` (e.g. an installed binary) if set, else the
    package from *this* checkout, installed or not."""
    override = os.environ.get("AUTHZ_E2E_CMD")
    if override:
        return shlex.split(override)
    if (REPO_ROOT / "authz" / "__main__.py").exists():
        return [sys.executable, "-m", "authz"]
    return [sys.executable, "-c", "import sys; from authz.cli import main; sys.exit(main())"]


def short_tmpdir(prefix: str) -> Path:
    """A short temp dir: unix socket paths must stay under ~104 bytes, pytest's tmp_path
    can be longer than that."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp" if os.path.isdir("/tmp") else None))


# -- handles -------------------------------------------------------------------------------


@dataclass
class AuthzServer:
    process: Process
    policy_dir: Path
    grpc_addr: str | None  # "127.0.0.1:PORT" or "unix:/tmp/.../grpc.sock"; None: gRPC off
    http_url: str  # "http://127.0.0.1:PORT" (healthz, readyz, metrics)
    http_check_addr: str | None = None  # "127.0.0.1:PORT" (HTTP checks); None: off

    def metrics(self) -> str:
        return wait_for_http(f"{self.http_url}/metrics", timeout=5.0).decode()


@dataclass
class Upstream:
    process: Process
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class EnvoyStack:
    authz: AuthzServer
    upstream: Upstream
    envoy: EnvoyProcess
    listen_port: int
    bootstrap: dict[str, Any] = field(repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    @property
    def admin_url(self) -> str:
        return self.envoy.admin_url

    def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        *,
        body: bytes | None = None,
        timeout: float = 10.0,
    ) -> HttpResponse:
        """One request through Envoy. Never raises on HTTP status, never follows redirects."""
        return http_request(self.base_url, method, path, headers, body=body, timeout=timeout)

    def get(self, path: str, token: str | None = None, **headers: str) -> HttpResponse:
        """GET through Envoy; ``x_auth_subject="v"`` sends header ``x-auth-subject: v``."""
        hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
        if token is not None:
            hdrs["authorization"] = f"Bearer {token}"
        return self.request("GET", path, hdrs)


# -- starters ------------------------------------------------------------------------------


def start_authz(
    stack: ExitStack,
    policy_dir: str | os.PathLike[str],
    *,
    grpc_unix: bool = False,
    grpc: bool = True,
    http_check: bool = True,
    wait_ready: bool = True,
    log_level: str = "info",
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    http_port: int | None = None,
) -> AuthzServer:
    """Start `authz serve` with gRPC and HTTP checks on free ports (either can be off);
    wait for /readyz (or only /healthz if ``wait_ready=False``). ``http_port``: the ops
    port, when an argument must name it (default: a free one)."""
    grpc_addr: str | None = None
    if grpc and grpc_unix:
        sock_dir = short_tmpdir("authz-")
        stack.callback(shutil.rmtree, sock_dir, ignore_errors=True)
        grpc_addr = f"unix:{sock_dir / 'grpc.sock'}"
    elif grpc:
        grpc_addr = f"127.0.0.1:{free_port()}"
    check_addr = f"127.0.0.1:{free_port()}" if http_check else None
    http_port = http_port or free_port()
    argv = [
        *authz_command(), "serve",
        "--policy-dir", os.fspath(policy_dir),
        "--grpc-addr", grpc_addr or "off",
        "--http-check-addr", check_addr or "off",
        "--http-addr", f"127.0.0.1:{http_port}",
        "--log-level", log_level,
        *extra_args,
    ]  # fmt: skip
    proc = Process(argv, name="authz", env=child_env(**(env or {})), cwd=REPO_ROOT).start()
    stack.callback(_stop_and_report, proc)
    http_url = f"http://127.0.0.1:{http_port}"
    wait_for_http(f"{http_url}/{'readyz' if wait_ready else 'healthz'}", STARTUP_TIMEOUT, proc=proc)
    for addr in (grpc_addr, check_addr):
        if addr is not None:
            wait_for_addr(addr, STARTUP_TIMEOUT, proc=proc)
    return AuthzServer(proc, Path(policy_dir), grpc_addr, http_url, check_addr)


def start_upstream(stack: ExitStack) -> Upstream:
    port = free_port()
    proc = Process(
        [sys.executable, str(UPSTREAM_SCRIPT), "--port", str(port)],
        name="upstream",
        env=child_env(),
    ).start()
    stack.callback(_stop_and_report, proc)
    wait_for_http(f"http://127.0.0.1:{port}/", STARTUP_TIMEOUT, proc=proc)
    return Upstream(proc, port)


def start_envoy_stack(
    stack: ExitStack,
    policy_dir: str | os.PathLike[str],
    *,
    grpc_unix: bool = False,
    timeout_ms: int = 500,
    with_jwt_authn: Mapping[str, Any] | None = None,
    policy_routes: Mapping[str, str] = DEFAULT_POLICY_ROUTES,
    authz_args: Sequence[str] = (),
    authz_env: Mapping[str, str] | None = None,
    transport: str = "grpc",
    authz_http_port: int | None = None,
) -> EnvoyStack:
    """``transport="http"``: Envoy's http_service against authz's HTTP checks (no route
    bindings: Envoy sends context_extensions to gRPC checks only)."""
    authz = start_authz(
        stack,
        policy_dir,
        grpc_unix=grpc_unix,
        extra_args=authz_args,
        env=authz_env,
        http_port=authz_http_port,
    )
    upstream = start_upstream(stack)
    listen_port, admin_port = free_port(), free_port()
    http = transport == "http"
    authz_addr = authz.http_check_addr if http else authz.grpc_addr
    assert authz_addr is not None
    bootstrap = envoy_bootstrap(
        listen_port=listen_port,
        admin_port=admin_port,
        authz_grpc=authz_addr,
        transport=transport,
        upstream_port=upstream.port,
        timeout_ms=timeout_ms,
        with_jwt_authn=with_jwt_authn,
        policy_routes={} if http else policy_routes,
    )
    envoy = EnvoyProcess(bootstrap, admin_port=admin_port, ready_timeout=STARTUP_TIMEOUT)
    stack.callback(_stop_and_report, envoy)
    envoy.start()
    return EnvoyStack(authz, upstream, envoy, listen_port, bootstrap)


def _stop_and_report(handle: Process | EnvoyProcess) -> None:
    """Teardown: stop, and print the log tail (pytest shows it only for failing tests)."""
    proc = handle.process if isinstance(handle, EnvoyProcess) else handle
    handle.stop()
    if proc is not None:
        proc.print_tail(file=sys.stdout)
    handle.cleanup()


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def _function_stack() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


@pytest.fixture(scope="module")
def _module_stack() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


# A fixture hands out the starter bound to its ExitStack: same arguments, cleaned up with it.
AuthzFactory = Callable[..., AuthzServer]
EnvoyStackFactory = Callable[..., EnvoyStack]


@pytest.fixture
def authz_server(_function_stack: ExitStack) -> AuthzFactory:
    """``authz_server(policy_dir, grpc_unix=False, wait_ready=True, ...) -> AuthzServer``."""
    return partial(start_authz, _function_stack)


@pytest.fixture(scope="module")
def authz_server_module(_module_stack: ExitStack) -> AuthzFactory:
    return partial(start_authz, _module_stack)


@pytest.fixture
def echo_upstream(_function_stack: ExitStack) -> Upstream:
    """The echo upstream (examples/upstream.py) on a free port."""
    return start_upstream(_function_stack)


@pytest.fixture
def envoy_stack(_function_stack: ExitStack) -> EnvoyStackFactory:
    """``envoy_stack(policy_dir, grpc_unix=False, timeout_ms=500, ...) -> EnvoyStack``."""
    return partial(start_envoy_stack, _function_stack)


@pytest.fixture(scope="module")
def envoy_stack_module(_module_stack: ExitStack) -> EnvoyStackFactory:
    return partial(start_envoy_stack, _module_stack)


# -- third-party parts (tests/support/{nginx,caddy,redis,browser,hydra}.py) -----------------
# Each fixture hands out its part's constructor, started and entered into the fixture's
# ExitStack: ``nginx_server(http_block, port=p)``, ``caddy_server(sites, port=p)``,
# ``redis_server(tcp=False)``, ``browser()``, ``hydra_server_module(login_app=True, ...)``.

NginxFactory = Callable[..., NginxServer]
CaddyFactory = Callable[..., CaddyServer]
RedisFactory = Callable[..., RedisServer]
BrowserFactory = Callable[..., Browser]
HydraFactory = Callable[..., HydraServer]


@pytest.fixture
def nginx_server(_function_stack: ExitStack) -> NginxFactory:
    return lambda *args, **kwargs: _function_stack.enter_context(NginxServer(*args, **kwargs))


@pytest.fixture
def caddy_server(_function_stack: ExitStack) -> CaddyFactory:
    return lambda *args, **kwargs: _function_stack.enter_context(CaddyServer(*args, **kwargs))


@pytest.fixture
def redis_server(_function_stack: ExitStack) -> RedisFactory:
    return lambda **kwargs: _function_stack.enter_context(RedisServer(**kwargs))


@pytest.fixture
def browser(_function_stack: ExitStack) -> BrowserFactory:
    return lambda **kwargs: _function_stack.enter_context(Browser(**kwargs))


@pytest.fixture(scope="module")
def hydra_server_module(_module_stack: ExitStack) -> HydraFactory:
    """Hydra takes ~2-4 s to start: one per test module that needs it."""
    return lambda **kwargs: _module_stack.enter_context(HydraServer(**kwargs))
