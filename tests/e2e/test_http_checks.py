"""authz's HTTP checks behind a real Envoy (http_service), NGINX (auth_request) and Caddy
(forward_auth), each configured with `authz proxy-config`'s output, in front of the echo upstream.

For each proxy, what a client and the upstream see: allow with identity headers (a
client's own replaced, the verified token stripped), 401 with the challenge, 403
`insufficient_scope` with the scope challenge, anonymous routes with spoofed identity
headers dropped, a spoofed description of the original request ignored, and the
optional proxy secret. The decisions are counted by authz's HTTP transport.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from authz.devtools import generate_key
from authz.proxyconfig import caddy, model, nginx
from tests.e2e.conftest import STARTUP_TIMEOUT, AuthzServer, start_authz, start_upstream
from tests.e2e.test_envoy_flows import ISS, _write_policies, token
from tests.support.caddy import CaddyServer
from tests.support.envoy import EnvoyProcess, envoy_bootstrap
from tests.support.nginx import NginxServer
from tests.support.procs import HttpResponse, free_port, http_request, scratch_dir

SECRET = "s3cret-for-the-proxy"
SCOPE_CHALLENGE = (
    'Bearer realm="authz", error="insufficient_scope", '
    'error_description="the token lacks a required scope", scope="orders.write"'
)


def _deployment(authz: AuthzServer, listen: int, upstream: int, secret: bool) -> model.Deployment:
    assert authz.http_check_addr is not None
    return model.Deployment(
        transport=model.Transport.HTTP,
        authz=model.parse_tcp(authz.http_check_addr, model.HTTP_CHECK_PORT),
        listen=model.TcpAddress("127.0.0.1", listen),
        upstream=model.TcpAddress("127.0.0.1", upstream),
        identity_headers=("x-auth-scopes",),  # NGINX and Caddy need every name
        proxy_secret=secret,
    )


def _envoy(stack: ExitStack, authz: AuthzServer, upstream: int, secret: bool) -> str:
    listen, admin = free_port(), free_port()
    assert authz.http_check_addr is not None
    bootstrap = envoy_bootstrap(
        listen_port=listen,
        admin_port=admin,
        authz_grpc=authz.http_check_addr,
        transport="http",
        upstream_port=upstream,
        policy_routes={},
    )
    if secret:  # what `authz proxy-config envoy --transport http --proxy-secret` adds
        hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ext_authz = hcm["typed_config"]["http_filters"][0]["typed_config"]
        ext_authz["http_service"]["authorization_request"] = {
            "headers_to_add": [
                {
                    "key": model.PROXY_SECRET_HEADER,
                    "value": f"%ENVIRONMENT({model.PROXY_SECRET_ENV})%",
                }
            ]
        }
    envoy = EnvoyProcess(bootstrap, admin_port=admin, ready_timeout=STARTUP_TIMEOUT)
    stack.enter_context(envoy)
    return f"http://127.0.0.1:{listen}"


def _nginx(stack: ExitStack, authz: AuthzServer, upstream: int, secret: bool) -> str:
    listen = free_port()
    block = nginx.http_block(_deployment(authz, listen, upstream, secret))
    if secret:  # the include file the generated config names, in the test's own dir
        directory = scratch_dir("authz-secret-")
        stack.callback(shutil.rmtree, directory, ignore_errors=True)
        include = directory / "secret.conf"
        include.write_text(f'proxy_set_header X-Authz-Proxy-Secret "{SECRET}";\n')
        block = block.replace(nginx.NGINX_SECRET_INCLUDE, str(include))
    return stack.enter_context(NginxServer(block, port=listen)).url


def _caddy(stack: ExitStack, authz: AuthzServer, upstream: int, secret: bool) -> str:
    listen = free_port()
    site = caddy.site(_deployment(authz, listen, upstream, secret))
    return stack.enter_context(CaddyServer(site, port=listen)).url


@dataclass(frozen=True)
class Proxy:
    name: str
    start: Callable[[ExitStack, AuthzServer, int, bool], str]
    relays_deny_body: bool  # authz's JSON body reaches the client (NGINX sends its own)
    bad_request: int  # what a client gets for a request authz finds malformed
    description_header: str | None  # the header a client might spoof to change what is judged


PROXIES = [
    Proxy("envoy", _envoy, True, 400, None),
    Proxy("nginx", _nginx, False, 403, "X-Original-URI"),
    Proxy("caddy", _caddy, True, 400, "X-Forwarded-Uri"),
]


@dataclass
class Stack:
    proxy: Proxy
    url: str
    authz: AuthzServer

    def get(self, path: str, value: str | None = None, **headers: str) -> HttpResponse:
        sent = {k.replace("_", "-"): v for k, v in headers.items()}
        if value is not None:
            sent["Authorization"] = f"Bearer {value}"
        return http_request(self.url, "GET", path, sent)

    def decisions(self, reason: str) -> float:
        """authz_decisions_total{reason} from authz's own /metrics."""
        total = 0.0
        for line in self.authz.metrics().splitlines():
            if line.startswith("authz_decisions_total{") and f'reason="{reason}"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture(scope="module")
def keys() -> tuple[dict[str, Any], dict[str, Any]]:
    return generate_key("ES256", "e2e-1")


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory, keys: Any) -> Path:
    directory = tmp_path_factory.mktemp("policies")
    _write_policies(directory, keys[1])
    return directory


@pytest.fixture(scope="module", params=PROXIES, ids=lambda p: p.name)
def stack(request: pytest.FixtureRequest, policies: Path) -> Iterator[Stack]:
    proxy: Proxy = request.param
    with ExitStack() as exits:
        authz = start_authz(exits, policies, grpc=False)
        upstream = start_upstream(exits)
        yield Stack(proxy, proxy.start(exits, authz, upstream.port, False), authz)


def test_allow_sets_identity_replaces_a_spoofed_one_and_strips_the_token(
    stack: Stack, keys: Any
) -> None:
    before = stack.decisions("allowed")
    response = stack.get(
        "/orders/1?x=1", token(keys, scope="orders.read"), x_auth_subject="mallory"
    )
    assert response.status == 200, response.body
    seen = response.json()
    assert seen["path"] == "/orders/1?x=1"
    headers = seen["headers"]
    assert headers["x-auth-subject"] == "alice"
    assert headers["x-auth-issuer"] == ISS
    assert headers["x-auth-scopes"] == "orders.read"
    assert "authorization" not in headers  # the policy's stripAuthorization
    assert "x-authz-remove" not in headers
    assert stack.decisions("allowed") == before + 1


def test_the_http_queue_wait_is_on_the_metrics_page(stack: Stack) -> None:
    """The operator's overload signal exists for HTTP checks too (the loop is probed every
    100 ms from the start)."""

    def probes() -> float:
        name = 'authz_check_queue_seconds_count{transport="http"}'
        (line,) = [line for line in stack.authz.metrics().splitlines() if line.startswith(name)]
        return float(line.split()[-1])

    first = probes()
    time.sleep(0.5)
    assert probes() >= first + 2


def test_no_token_is_401_with_a_bare_challenge(stack: Stack) -> None:
    response = stack.get("/orders/1")
    assert response.status == 401
    # Repeated headers arrive joined with ", ": equality means it was sent once.
    assert response.headers["www-authenticate"] == 'Bearer realm="authz"'
    if stack.proxy.relays_deny_body:
        assert response.json()["error_description"] == "a bearer token is required"


def test_a_bad_token_is_401_invalid_token(stack: Stack, keys: Any) -> None:
    response = stack.get("/orders/1", token(keys, ttl=-3600))
    assert response.status == 401
    assert response.headers["www-authenticate"] == (
        'Bearer realm="authz", error="invalid_token", error_description="the token has expired"'
    )


def test_missing_scope_is_403_with_the_scope_challenge(stack: Stack, keys: Any) -> None:
    value = token(keys, scope="orders.read")
    response = http_request(
        stack.url, "POST", "/orders", {"Authorization": f"Bearer {value}"}, body=b"{}"
    )
    assert response.status == 403
    assert response.headers["www-authenticate"] == SCOPE_CHALLENGE
    if stack.proxy.relays_deny_body:
        assert response.json()["error"] == "insufficient_scope"


def test_anonymous_route_drops_spoofed_identity_headers(stack: Stack) -> None:
    response = stack.get("/healthz", x_auth_subject="root", x_auth_scopes="admin")
    assert response.status == 200, response.body
    headers = response.json()["headers"]
    assert "x-auth-subject" not in headers
    assert "x-auth-scopes" not in headers


def test_a_spoofed_description_of_the_request_is_ignored(stack: Stack) -> None:
    """The proxy sets the headers authz reads the original request from; a client's own
    values never replace them (here: claiming the public /healthz for /orders/1)."""
    spoof = {
        "X-Original-URI": "/healthz",
        "X-Forwarded-Uri": "/healthz",
        "X-Original-Method": "GET",
    }
    response = http_request(stack.url, "GET", "/orders/1", spoof)
    assert response.status == 401


def test_unlisted_route_is_403_access_denied(stack: Stack, keys: Any) -> None:
    response = stack.get("/internal/x", token(keys, scope="orders.read"))
    assert response.status == 403
    assert "www-authenticate" not in response.headers


def test_two_tokens_are_a_bad_request(stack: Stack, keys: Any) -> None:
    value = token(keys, scope="orders.read")
    response = http_request(
        stack.url, "GET", "/orders/1", {"Authorization": f"Bearer {value}, Bearer {value}"}
    )
    assert response.status == stack.proxy.bad_request
    assert 'error="invalid_request"' in response.headers["www-authenticate"]


@pytest.mark.parametrize("proxy", PROXIES, ids=lambda p: p.name)
def test_the_proxy_secret(
    proxy: Proxy, policies: Path, keys: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --http-proxy-secret-file, checks from the configured proxy pass; one that
    reaches the check port without the secret is denied proxy_not_trusted."""
    secret_file = tmp_path / "proxy-secret"
    secret_file.write_text(SECRET + "\n")
    monkeypatch.setenv(model.PROXY_SECRET_ENV, SECRET)  # Envoy and Caddy read it from there
    with ExitStack() as exits:
        authz = start_authz(
            exits, policies, grpc=False, extra_args=["--http-proxy-secret-file", str(secret_file)]
        )
        upstream = start_upstream(exits)
        url = proxy.start(exits, authz, upstream.port, True)
        response = http_request(
            url, "GET", "/orders/1", {"Authorization": f"Bearer {token(keys, scope='orders.read')}"}
        )
        assert response.status == 200, response.body
        assert "x-authz-proxy-secret" not in response.upstream_headers
        direct = http_request(
            f"http://{authz.http_check_addr}",
            "GET",
            "/check/envoy/healthz",
            {"Host": "api.example", model.PROXY_SECRET_HEADER: "guess"},
        )
        assert direct.status == 403
        assert direct.json()["error_description"] == "the request did not come from a trusted proxy"
