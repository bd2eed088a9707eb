"""Browser sign-in's answers as the proxies get them: over gRPC a redirect with cookies in
the denied response and a renewed session cookie in the OK response's
`response_headers_to_add` (each Set-Cookie appended: a second must not overwrite the
first); over HTTP the same as response headers, and for NGINX, which cannot relay a
redirect from auth_request, a 401. The e2e tests show Envoy relaying both to a browser."""

from __future__ import annotations

from envoy.config.core.v3.base_pb2 import HeaderValueOption
from google.rpc import code_pb2

from authz.request.respond import Answer
from authz.transport.dialects import Dialect, render
from authz.transport.grpc import GrpcChecker

APPEND = HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
OVERWRITE = HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def _render(answer: Answer) -> object:
    return GrpcChecker.render(GrpcChecker.__new__(GrpcChecker), answer)


def test_a_redirect_carries_its_location_and_every_cookie() -> None:
    answer = Answer(
        302,
        "login_required",
        (
            ("content-type", "text/html; charset=utf-8"),
            ("location", "https://op.example/authorize?state=s"),
            ("set-cookie", "authz-login-1=a; Path=/oauth2/callback"),
            ("set-cookie", "__Host-authz-session=; Path=/; Max-Age=0"),
        ),
        body="<!doctype html>",
    )
    response = _render(answer)
    assert response.status.code == code_pb2.UNAUTHENTICATED  # type: ignore[attr-defined]
    denied = response.denied_response  # type: ignore[attr-defined]
    assert denied.status.code == 302 and denied.body == "<!doctype html>"
    actions = [(h.header.key, h.append_action) for h in denied.headers]
    assert actions == [
        ("content-type", OVERWRITE),
        ("location", OVERWRITE),
        ("set-cookie", APPEND),
        ("set-cookie", APPEND),
    ]


def test_a_retry_is_unavailable() -> None:
    response = _render(Answer(503, "provider_unavailable", (("retry-after", "1"),)))
    assert response.status.code == code_pb2.UNAVAILABLE  # type: ignore[attr-defined]
    assert response.denied_response.status.code == 503  # type: ignore[attr-defined]


def test_an_allow_sends_a_renewed_cookie_to_the_client_not_the_upstream() -> None:
    answer = Answer(
        200,
        "allowed",
        (("x-auth-subject", "alice"),),
        ("cookie",),
        response_headers=(("set-cookie", "__Host-authz-session=v; Path=/"),),
    )
    ok = _render(answer).ok_response  # type: ignore[attr-defined]
    assert [h.header.key for h in ok.headers] == ["x-auth-subject"]
    assert list(ok.headers_to_remove) == ["cookie"]
    (cookie,) = ok.response_headers_to_add
    assert cookie.header.value == "__Host-authz-session=v; Path=/"
    assert cookie.append_action == APPEND


def test_over_http_the_cookies_are_response_headers() -> None:
    redirect = Answer(
        302,
        "login_required",
        (("location", "https://op.example/a"), ("set-cookie", "a=1"), ("set-cookie", "b=2")),
        body="<p>",
    )
    wire = render(redirect, Dialect.ENVOY).data.decode()
    assert wire.startswith("HTTP/1.1 302 Found\r\n")
    assert "set-cookie: a=1\r\nset-cookie: b=2\r\n" in wire
    allow = Answer(
        200, "allowed", (("x-auth-subject", "alice"),), response_headers=(("set-cookie", "s=v"),)
    )
    wire = render(allow, Dialect.ENVOY).data.decode()
    assert "x-auth-subject: alice\r\nset-cookie: s=v\r\n" in wire


def test_nginx_gets_a_401_for_a_redirect_it_cannot_relay() -> None:
    redirect = Answer(302, "login_required", (("location", "https://op.example/a"),))
    assert render(redirect, Dialect.NGINX).status == 401
    assert render(redirect, Dialect.FORWARD).status == 302  # Caddy and Traefik relay it
