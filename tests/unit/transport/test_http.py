"""The HTTP transport as a proxy sees it: real sockets to the real server on uvloop.

Answers per dialect, keep-alive and pipelining, the limits (headers, body, a slow head, idle
connections), missing or contradictory descriptions of the original request, the proxy
secret, a key wait run off the event loop, and the fast 503 when too many checks wait.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.devtools import mint_token
from authz.policy.files import DirectorySource, load
from authz.request.view import MAX_HEADER_BYTES, MAX_HEADERS, MAX_PATH
from authz.server import policy_store
from authz.transport.http import HttpLimits
from tests.support.docs import issuer, policy, rule
from tests.support.http_checks import HttpCheckServer, Response, http_check_server, raw_request
from tests.support.keyserver import KeyServer
from tests.support.snapshots import bearer_token, serve
from tests.support.tokens import AUDIENCE, NOW, signing_key

HOST = {"host": "api.example"}
NGINX = {
    "x-original-method": "GET",
    "x-original-uri": "/orders/1",
    "x-original-host": "api.example",
    "x-forwarded-proto": "https",
}
FORWARD = {
    "x-forwarded-method": "GET",
    "x-forwarded-uri": "/orders/1",
    "x-forwarded-host": "api.example",
    "x-forwarded-proto": "https",
}


def _served() -> Any:
    return serve(
        issuer(claims={"scopes": ["scope"]}),
        policy(
            rules=[
                rule("health", paths=["/healthz"], action="allowAnonymous"),
                rule("read", paths=["/orders/**"], methods=["GET", "HEAD"],
                     requireScopes={"allOf": ["orders.read"]}),
                rule("write", paths=["/orders"], methods=["POST"],
                     requireScopes={"allOf": ["orders.write"]}),
            ],
            defaultAction="deny",
            response={
                "headers": [
                    {"name": "x-auth-subject", "claim": "sub"},
                    {"name": "x-auth-email", "claim": "email"},
                ],
                "stripAuthorization": True,
            },
        ),
    )  # fmt: skip


@pytest.fixture(scope="module")
def server() -> Iterator[HttpCheckServer]:
    with http_check_server(_served(), clock=lambda: NOW) as running:
        yield running


def bearer(**claims: Any) -> dict[str, str]:
    return {"authorization": f"Bearer {bearer_token(**claims)}"}


# -- answers per dialect -----------------------------------------------------------------------


def test_envoy_allow_sets_identity_and_names_what_to_remove(server: HttpCheckServer) -> None:
    response = server.request(
        "GET", "/check/envoy/orders/1", {**HOST, **bearer(scope="orders.read")}
    )
    assert response.status == 200
    assert response.headers["x-auth-subject"] == "alice"
    # No email claim: the header is removed upstream, as is the verified Authorization.
    assert response.headers["x-envoy-auth-headers-to-remove"] == "x-auth-email,authorization"
    assert response.body == b""


def test_envoy_denials_carry_challenge_and_body(server: HttpCheckServer) -> None:
    missing = server.request("GET", "/check/envoy/orders/1", HOST)
    assert missing.status == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="authz"'
    assert missing.json() == {
        "error": "unauthorized",
        "error_description": "a bearer token is required",
    }
    scope = server.request("POST", "/check/envoy/orders", {**HOST, **bearer(scope="orders.read")})
    assert scope.status == 403
    assert scope.headers["www-authenticate"] == (
        'Bearer realm="authz", error="insufficient_scope", '
        'error_description="the token lacks a required scope", scope="orders.write"'
    )
    assert scope.json()["error"] == "insufficient_scope"


def test_anonymous_route_still_removes_spoofable_identity(server: HttpCheckServer) -> None:
    response = server.request("GET", "/check/envoy/healthz", {**HOST, "x-auth-subject": "root"})
    assert response.status == 200
    assert "x-auth-subject" not in response.headers
    assert response.headers["x-envoy-auth-headers-to-remove"] == "x-auth-subject,x-auth-email"


def test_a_head_check_gets_no_body(server: HttpCheckServer) -> None:
    """A body after the HEAD answer would be read by the proxy as the next response."""
    with server.connect() as conn:
        conn.send(raw_request("HEAD", "/check/envoy/orders/1", HOST))
        conn.send(raw_request("GET", "/check/envoy/healthz", HOST))
        data = b""
        while data.count(b"\r\n\r\n") < 2:
            data += conn.sock.recv(65536)
    head, rest = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
    assert b"\r\ncontent-length: 73" in head  # the size a GET would get
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n")


def test_nginx_reads_the_described_request(server: HttpCheckServer) -> None:
    ok = server.request("GET", "/check/nginx", {**NGINX, **bearer(scope="orders.read")})
    assert ok.status == 200 and ok.headers["x-auth-subject"] == "alice"
    assert ok.headers["x-authz-remove"] == "x-auth-email,authorization"
    post = {**NGINX, "x-original-method": "POST", "x-original-uri": "/orders"}
    assert (
        server.request("GET", "/check/nginx", {**post, **bearer(scope="orders.read")}).status == 403
    )


def test_nginx_gets_403_where_the_request_is_bad(server: HttpCheckServer) -> None:
    response = server.request(
        "GET", "/check/nginx", {k: v for k, v in NGINX.items() if "uri" not in k}
    )
    assert response.status == 403
    assert 'error="invalid_request"' in response.headers["www-authenticate"]


def test_forward_auth_reads_x_forwarded(server: HttpCheckServer) -> None:
    ok = server.request(
        "GET", "/check/forward?from=caddy", {**FORWARD, **bearer(scope="orders.read")}
    )
    assert ok.status == 200 and ok.headers["x-auth-subject"] == "alice"
    denied = server.request("GET", "/check/forward", FORWARD)
    assert denied.status == 401 and denied.headers["www-authenticate"] == 'Bearer realm="authz"'


@pytest.mark.parametrize(
    "headers",
    [
        {k: v for k, v in FORWARD.items() if k != "x-forwarded-host"},
        {**FORWARD, "x-forwarded-host": "api.example, evil.example"},
        {**FORWARD, "x-forwarded-proto": "gopher"},
    ],
    ids=["missing-host", "two-hosts", "bad-proto"],
)
def test_missing_or_contradictory_descriptions_are_400(
    server: HttpCheckServer, headers: dict[str, str]
) -> None:
    before = server.decisions("request_invalid")
    response = server.request("GET", "/check/forward", {**headers, **bearer(scope="orders.read")})
    assert response.status == 400
    assert response.json()["error"] == "invalid_request"
    assert server.decisions("request_invalid") == before + 1


def test_a_description_header_sent_twice_is_400(server: HttpCheckServer) -> None:
    with server.connect() as conn:
        head = raw_request("GET", "/check/forward", {**FORWARD, **bearer(scope="orders.read")})
        twice = head.replace(b"\r\n\r\n", b"\r\nX-Forwarded-Uri: /admin\r\n\r\n")
        conn.send(twice)
        [response] = conn.responses(1)
    assert response.status == 400


def test_other_paths_are_not_checks(server: HttpCheckServer) -> None:
    before = server.decisions("request_invalid")
    assert server.request("GET", "/orders/1", HOST).status == 404
    assert server.request("GET", "/check/envoyish/x", HOST).status == 404
    assert server.decisions("request_invalid") == before


# -- connections -----------------------------------------------------------------------------


def test_keep_alive_and_pipelined_answers_in_order(server: HttpCheckServer) -> None:
    paths = ["/check/envoy/orders/1", "/check/envoy/healthz", "/check/envoy/nope"] * 3
    with server.connect() as conn:
        conn.send(b"".join(raw_request("GET", p, HOST) for p in paths))
        statuses = [r.status for r in conn.responses(len(paths))]
        again = conn.request("GET", "/check/envoy/healthz", HOST)
    assert statuses == [401, 200, 403] * 3
    assert again.status == 200 and again.keep_alive


def test_connection_close_is_honoured(server: HttpCheckServer) -> None:
    with server.connect() as conn:
        response = conn.request("GET", "/check/envoy/healthz", {**HOST, "connection": "close"})
        assert response.status == 200
        assert response.headers["connection"] == "close"
        assert conn.closed_by_server()
    with server.connect() as conn:  # HTTP/1.0 without keep-alive
        conn.send(b"GET /check/envoy/healthz HTTP/1.0\r\nHost: api.example\r\n\r\n")
        [response] = conn.responses(1)
        assert response.status == 200 and conn.closed_by_server()


def test_broken_framing_is_400_and_closed(server: HttpCheckServer) -> None:
    with server.connect() as conn:
        conn.send(b"GET /check/envoy/x HTTP/1.1\r\nHost api.example\r\n\r\n")
        [response] = conn.responses(1)
        assert response.status == 400 and conn.closed_by_server()


@pytest.mark.parametrize(
    "extra",
    [
        {f"x-h{i}": "v" for i in range(MAX_HEADERS + 1)},
        {"x-big": "v" * MAX_HEADER_BYTES},
        {f"x-h{i}": "v" * (MAX_HEADER_BYTES // 2) for i in range(6)},
    ],
    ids=["count", "one-header", "total"],
)
def test_header_limits_answer_request_invalid_and_close(
    server: HttpCheckServer, extra: dict[str, str]
) -> None:
    before = server.decisions("request_invalid")
    with server.connect() as conn:
        conn.send(raw_request("GET", "/check/envoy/orders/1", {**HOST, **extra}))
        [response] = conn.responses(1)
        assert response.status == 400
        assert response.json()["error"] == "invalid_request"
        assert conn.closed_by_server()
    assert server.decisions("request_invalid") == before + 1


def test_a_path_over_the_limit_is_refused(server: HttpCheckServer) -> None:
    response = server.request("GET", "/check/envoy/" + "a" * MAX_PATH, HOST)
    assert response.status == 400


def test_a_body_is_discarded_up_to_the_limit(server: HttpCheckServer) -> None:
    with server.connect() as conn:
        small = raw_request("POST", "/check/envoy/healthz", {**HOST, "content-length": "5"})
        conn.send(small + b"hello")
        [response] = conn.responses(1)
        assert response.status == 200
        large = raw_request("POST", "/check/envoy/healthz", {**HOST, "content-length": "100000"})
        conn.send(large + b"x" * 100_000)
        [response] = conn.responses(1)
        assert response.status == 413 and conn.closed_by_server()


def test_slow_heads_and_idle_connections_are_closed() -> None:
    limits = HttpLimits(header_timeout=1, idle_timeout=2)
    with (
        http_check_server(_served(), limits=limits, clock=lambda: NOW) as server,
        server.connect() as slow,
        server.connect() as idle,
        server.connect() as busy,
    ):
        slow.send(b"GET /check/envoy/healthz HTTP/1.1\r\nHost: api")
        assert idle.request("GET", "/check/envoy/healthz", HOST).status == 200
        started = time.monotonic()
        assert slow.closed_by_server(timeout=5)
        assert 1 <= time.monotonic() - started < 3.5
        for _ in range(4):  # a connection in use stays open
            time.sleep(0.6)
            assert busy.request("GET", "/check/envoy/healthz", HOST).status == 200
        assert idle.closed_by_server(timeout=0.1)


def test_connections_over_the_limit_are_closed() -> None:
    with http_check_server(_served(), limits=HttpLimits(max_connections=2)) as server:
        first, second, third = server.connect(), server.connect(), server.connect()
        try:
            assert first.request("GET", "/check/envoy/healthz", HOST).status == 200
            assert second.request("GET", "/check/envoy/healthz", HOST).status == 200
            assert third.closed_by_server()
        finally:
            for conn in (first, second, third):
                conn.close()


# -- the proxy secret ------------------------------------------------------------------------


def test_the_proxy_secret_is_required_when_configured() -> None:
    with http_check_server(_served(), proxy_secret=b"s3cret", clock=lambda: NOW) as server:
        for sent in ({}, {"x-authz-proxy-secret": "wrong"}):
            response = server.request("GET", "/check/envoy/healthz", {**HOST, **sent})
            assert response.status == 403
            assert (
                response.json()["error_description"]
                == "the request did not come from a trusted proxy"
            )
            assert "www-authenticate" not in response.headers
        assert server.decisions("proxy_not_trusted") == 2
        good = {**HOST, "x-authz-proxy-secret": "s3cret"}
        assert server.request("GET", "/check/envoy/healthz", good).status == 200


# -- waits off the loop, and backpressure ------------------------------------------------------

ISS = "http://keys.test"  # replaced by the key server's URL


def _remote_policies(directory: Path, url: str, wait_ms: int) -> Path:
    remote = issuer(
        "remote",
        url,
        jwksUri=f"{url}/jwks",
        algorithms=["ES256"],
        fetch={
            "allowInsecureHttp": True,
            "unknownKidWaitMillis": wait_ms,
            "unknownKidCooldownSeconds": 1,
        },
    )
    docs = [remote, issuer(), policy(issuers=["remote", "idp"])]
    (directory / "policies.yaml").write_text(yaml.safe_dump_all(docs))
    return directory


def _token(iss: str, kid: str, sub: str = "alice") -> str:
    now = int(time.time())
    claims = {"iss": iss, "sub": sub, "aud": AUDIENCE, "iat": now, "exp": now + 300}
    return mint_token(signing_key("ES256", kid)[0], claims)


@pytest.fixture
def key_server() -> Iterator[KeyServer]:
    with KeyServer() as running:
        yield running


def _jwks(*kids: str) -> dict[str, Any]:
    return {"keys": [signing_key("ES256", kid)[1] for kid in kids]}


def _store(tmp_path: Path, key_server: KeyServer, wait_ms: int) -> Any:
    key_server.json("/jwks", _jwks("k1"))
    store = policy_store({}, threads=16)
    load(DirectorySource(_remote_policies(tmp_path, key_server.url, wait_ms)), store)
    deadline = time.monotonic() + 10
    while not store.key_states()["JWTIssuer/default/remote"].ready:
        assert time.monotonic() < deadline, "remote keys never loaded"
        time.sleep(0.02)
    return store


def _timed(server: HttpCheckServer, token: str) -> tuple[Response, float]:
    started = time.perf_counter()
    response = server.request("GET", "/check/envoy/x", {**HOST, "authorization": f"Bearer {token}"})
    return response, time.perf_counter() - started


def test_a_key_wait_runs_off_the_loop(tmp_path: Path, key_server: KeyServer) -> None:
    """A token with a new kid waits for the refetch on the pool; meanwhile the loop keeps
    answering other checks at once."""
    store = _store(tmp_path, key_server, wait_ms=3000)
    try:
        with http_check_server(store) as server:
            cached = _token(key_server.url, "k1")
            assert _timed(server, cached)[0].status == 200
            key_server.fault("/jwks", body=json.dumps(_jwks("k1", "k2")).encode(), delay=1.0)
            waited: list[tuple[Response, float]] = []
            rotated = threading.Thread(
                target=lambda: waited.append(_timed(server, _token(key_server.url, "k2")))
            )
            rotated.start()
            time.sleep(0.2)  # the rotated token is waiting for the slow refetch now
            others = [_timed(server, cached)[1] for _ in range(20)]
            rotated.join(10)
        [(response, seconds)] = waited
        assert response.status == 200 and 0.8 < seconds < 3
        assert max(others) < 0.2, others
    finally:
        store.close()


def test_too_many_waiting_checks_get_a_fast_503(tmp_path: Path, key_server: KeyServer) -> None:
    store = _store(tmp_path, key_server, wait_ms=3000)
    try:
        limits = HttpLimits(max_waiting=1, wait_threads=1)
        with http_check_server(store, limits=limits) as server:
            key_server.fault("/jwks", body=b'{"keys": []}', delay=1.5)
            first: list[tuple[Response, float]] = []
            waiting = threading.Thread(
                target=lambda: first.append(_timed(server, _token(key_server.url, "k8")))
            )
            waiting.start()
            time.sleep(0.3)
            response, seconds = _timed(server, _token(key_server.url, "k9", sub="bob"))
            assert response.status == 503 and seconds < 0.2
            assert response.json()["error"] == "temporarily_unavailable"
            assert "www-authenticate" not in response.headers
            assert server.decisions("overloaded") == 1
            # Checks that need no wait are still answered.
            assert _timed(server, _token(key_server.url, "k1"))[0].status == 200
            waiting.join(10)
        assert first[0][0].status == 401  # the refetch brought no k8
    finally:
        store.close()


def test_a_stalled_loop_shows_in_the_queue_wait_metric() -> None:
    """The loop's probe samples how long a check arriving now would wait. Stalling the loop
    from outside is a fault stand-in: the transport never blocks its own loop on purpose."""
    with http_check_server(_served(), clock=lambda: NOW) as server:
        time.sleep(0.35)
        sampled, long = server.queue_waits(longer_than=0.25)
        assert sampled >= 2 and long == 0  # an idle loop answers its probe at once
        server.transport._loop.call_soon_threadsafe(time.sleep, 0.5)  # a probe falls due in it
        time.sleep(0.8)
        assert server.queue_waits(longer_than=0.25)[1] == 1


def test_checks_queued_for_the_wait_pool_show_in_the_queue_wait_metric(
    tmp_path: Path, key_server: KeyServer
) -> None:
    store = _store(tmp_path, key_server, wait_ms=3000)
    try:
        limits = HttpLimits(max_waiting=2, wait_threads=1)
        with http_check_server(store, limits=limits) as server:
            key_server.fault("/jwks", body=b'{"keys": []}', delay=1.0)
            waiting = [
                threading.Thread(target=_timed, args=(server, _token(key_server.url, kid)))
                for kid in ("k5", "k6")
            ]
            for thread in waiting:
                thread.start()
                time.sleep(0.1)
            for thread in waiting:
                thread.join(10)
            # k6 waited on the pool's one thread while k5's check waited for the refetch
            assert server.queue_waits(longer_than=0.25)[1] == 1
    finally:
        store.close()


def test_the_transport_stops_with_a_check_still_waiting(
    tmp_path: Path, key_server: KeyServer
) -> None:
    store = _store(tmp_path, key_server, wait_ms=3000)
    try:
        with http_check_server(store) as server:
            key_server.fault("/jwks", body=b'{"keys": []}', delay=2)
            conn = server.connect()
            conn.send(
                raw_request(
                    "GET",
                    "/check/envoy/x",
                    {**HOST, "authorization": f"Bearer {_token(key_server.url, 'k7')}"},
                )
            )
            time.sleep(0.2)
        # The drain waited for the owed answer (within its grace) before closing.
        [response] = conn.responses(1, timeout=5)
        assert response.status == 401
        conn.close()
    finally:
        store.close()


def test_the_listener_is_closed_after_stop() -> None:
    with http_check_server(_served()) as server:
        port = server.port
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_a_strip_the_proxy_cannot_carry_out_is_refused() -> None:
    """stripAuthorization with a token in the query: no HTTP check answer can remove a
    query parameter, so allowing would hand the upstream the token. Refused instead."""
    served = serve(
        issuer(
            claims={"scopes": ["scope"]},
            tokenSources=[
                {"header": {"name": "Authorization", "prefix": "Bearer "}},
                {"query": {"name": "access_token"}},
                {"header": {"name": "X-Api-Token"}},
            ],
        ),
        policy(response={"stripAuthorization": True}),
    )
    token = bearer_token()
    with http_check_server(served, clock=lambda: NOW) as server:
        query = server.request("GET", f"/check/envoy/x?access_token={token}", HOST)
        assert query.status == 400 and query.json()["error"] == "invalid_request"
        assert server.decisions("request_invalid") == 1
        header = server.request(
            "GET", "/check/envoy/x", {**HOST, "authorization": f"Bearer {token}"}
        )
        assert header.status == 200
        # NGINX's configuration drops Authorization only; another token header it cannot.
        nginx = {**NGINX, "x-original-uri": "/x", "x-api-token": token}
        assert server.request("GET", "/check/nginx", nginx).status == 403
        forward = {**FORWARD, "x-forwarded-uri": "/x", "x-api-token": token}
        refused = server.request("GET", "/check/forward", forward)
        assert refused.status == 400 and refused.json()["error"] == "invalid_request"
        envoy = server.request("GET", "/check/envoy/x", {**HOST, "x-api-token": token})
        assert (
            envoy.status == 200 and envoy.headers["x-envoy-auth-headers-to-remove"] == "x-api-token"
        )
