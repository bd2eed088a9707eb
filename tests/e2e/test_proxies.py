"""Real NGINX ``auth_request`` and real Caddy ``forward_auth`` in front of the echo upstream.

These prove the proxy fixtures, with a tiny auth server (tests/support/auth_server.py) whose
answers are fixed (authz's own HTTP checks behind the same proxies: test_http_checks.py):
allow with the identity header replaced (never the client's), 401 with the challenge copied
once, 403 with the scope challenge, what the proxy tells the auth service about the original
request, and the status a client gets when the auth service is down.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import pytest

from tests.e2e.conftest import Upstream, start_upstream
from tests.support.auth_server import CHALLENGE, SCOPE_CHALLENGE, SUBJECT, FixedAuthServer
from tests.support.caddy import CaddyServer, forward_auth_site
from tests.support.nginx import NginxServer, auth_request_site
from tests.support.procs import HttpResponse, free_port, http_request


@dataclass(frozen=True)
class Proxy:
    """One proxy's configuration and the behaviour that differs between proxies."""

    name: str
    start: Callable[[ExitStack, str, str], str]  # (stack, auth addr, upstream addr) -> URL
    auth_path: str  # where the auth service is asked
    appends_query: bool  # the original query string is appended to auth_path
    method_header: str  # how the original method reaches the auth service
    uri_header: str
    relays_deny_body: bool  # the auth service's deny body reaches the client
    status_when_auth_down: int


def _nginx(stack: ExitStack, auth: str, upstream: str) -> str:
    port = free_port()
    site = auth_request_site(listen_port=port, auth=auth, upstream=upstream)
    return stack.enter_context(NginxServer(site, port=port)).url


def _caddy(stack: ExitStack, auth: str, upstream: str) -> str:
    port = free_port()
    site = forward_auth_site(listen_port=port, auth=auth, upstream=upstream)
    return stack.enter_context(CaddyServer(site, port=port)).url


PROXIES = [
    Proxy(
        "nginx", _nginx, "/check/nginx", False, "x-original-method", "x-original-uri", False, 500
    ),
    Proxy(
        "caddy", _caddy, "/check/forward", True, "x-forwarded-method", "x-forwarded-uri", True, 502
    ),
]


@dataclass
class Stack:
    proxy: Proxy
    url: str
    auth: FixedAuthServer
    upstream: Upstream

    def request(self, method: str, path: str, token: str | None, **headers: str) -> HttpResponse:
        sent = {k.replace("_", "-"): v for k, v in headers.items()}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        return http_request(self.url, method, path, sent)


@pytest.fixture(scope="module", params=PROXIES, ids=lambda p: p.name)
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    proxy: Proxy = request.param
    with ExitStack() as exits:
        upstream = start_upstream(exits)
        auth = exits.enter_context(FixedAuthServer())
        url = proxy.start(exits, auth.addr, f"127.0.0.1:{upstream.port}")
        yield Stack(proxy, url, auth, upstream)


def test_allow_passes_the_identity_and_replaces_a_spoofed_one(stack: Stack) -> None:
    response = stack.request("GET", "/api/items?x=1", "good", x_auth_subject="mallory")
    assert response.status == 200, response.body
    seen = response.json()
    assert seen["path"] == "/api/items?x=1"
    assert seen["headers"]["x-auth-subject"] == SUBJECT
    assert seen["headers"]["authorization"] == "Bearer good"


def test_allow_without_identity_drops_the_spoofed_header(stack: Stack) -> None:
    response = stack.request("GET", "/api/items", "anon", x_auth_subject="mallory")
    assert response.status == 200, response.body
    assert "x-auth-subject" not in response.upstream_headers


def test_401_carries_the_challenge_exactly_once(stack: Stack) -> None:
    response = stack.request("GET", "/api/items", None)
    assert response.status == 401
    # Repeated headers arrive joined with ", ": equality means it was sent once.
    assert response.headers["www-authenticate"] == CHALLENGE
    relayed = response.body == b'{"status": 401}'
    assert relayed is stack.proxy.relays_deny_body, response.body


def test_403_carries_the_scope_challenge(stack: Stack) -> None:
    response = stack.request("GET", "/api/items", "forbidden")
    assert response.status == 403
    assert response.headers["www-authenticate"] == SCOPE_CHALLENGE


def test_auth_service_is_told_the_original_method_and_uri(stack: Stack) -> None:
    before = len(stack.auth.calls())
    body = b"x" * 200_000  # larger than nginx's in-memory buffer: a temp file as `nobody`
    response = http_request(
        stack.url, "POST", "/api/items?y=2", {"Authorization": "Bearer good"}, body=body
    )
    assert response.status == 200, response.body
    assert response.json()["method"] == "POST"
    [call] = stack.auth.calls()[before:]
    query = "?y=2" if stack.proxy.appends_query else ""
    assert (call.method, call.path) == ("GET", stack.proxy.auth_path + query)
    assert call.headers[stack.proxy.method_header] == "POST"
    assert call.headers[stack.proxy.uri_header] == "/api/items?y=2"
    assert "content-length" not in call.headers or call.headers["content-length"] == "0"


@pytest.mark.parametrize("proxy", PROXIES, ids=lambda p: p.name)
def test_auth_service_down_fails_closed(proxy: Proxy) -> None:
    with ExitStack() as exits:
        upstream = start_upstream(exits)
        auth = FixedAuthServer()
        url = proxy.start(exits, auth.addr, f"127.0.0.1:{upstream.port}")
        auth.close()
        response = http_request(url, "GET", "/api/items", {"Authorization": "Bearer good"})
        assert response.status == proxy.status_when_auth_down
        assert b"x-auth-subject" not in response.body
