"""How each proxy dialect describes the original request, and the bytes each proxy reads back."""

from __future__ import annotations

import pytest

from authz.request.respond import Answer
from authz.request.view import RequestError
from authz.transport.dialects import Dialect, dialect_of, original_request, render, unsupported

NGINX = {
    "x-original-method": "POST",
    "x-original-uri": "/orders/%61dmin/../1?x=1",
    "x-original-host": "Shop.Example",
    "x-forwarded-proto": "https",
}
FORWARD = {
    "x-forwarded-method": "delete",
    "x-forwarded-uri": "/orders/1",
    "x-forwarded-host": "shop.example",
    "x-forwarded-proto": "http",
}


@pytest.mark.parametrize(
    ("target", "dialect"),
    [
        ("/check/envoy/orders/1?x=1", Dialect.ENVOY),
        ("/check/envoy/", Dialect.ENVOY),
        ("/check/envoy", None),  # no original path after the prefix
        ("/check/envoyx/orders", None),
        ("/check/nginx", Dialect.NGINX),
        ("/check/nginx/", None),
        ("/check/forward", Dialect.FORWARD),
        ("/check/forward?from=caddy", Dialect.FORWARD),  # Caddy appends the original query
        ("/check", None),
        ("/", None),
    ],
)
def test_the_check_path_names_the_dialect(target: str, dialect: Dialect | None) -> None:
    assert dialect_of(target) is dialect


def test_envoy_checks_are_the_original_request_after_the_prefix() -> None:
    headers = {"host": "Shop.Example:8443", "authorization": "Bearer x"}
    view = original_request(Dialect.ENVOY, "get", "/check/envoy//orders/./1?x=1", headers, set())
    # The host as Envoy routes on it (the shipped configs strip the port before ext_authz).
    assert (view.method, view.host, view.path) == ("GET", "shop.example:8443", "/orders/1")
    assert view.raw_path == "//orders/./1?x=1"
    assert view.headers is headers


@pytest.mark.parametrize(
    ("proto", "repeated", "scheme"),
    [
        ("https", set(), "https"),
        ("HTTP", set(), "http"),
        (None, set(), ""),  # not sent: unknown (a DPoP htu cannot match)
        ("https,http", set(), ""),  # not one value
        ("https", {"x-forwarded-proto"}, ""),  # sent twice
        ("ftp", set(), ""),
    ],
)
def test_envoy_checks_take_the_scheme_envoy_set(
    proto: str | None, repeated: set[str], scheme: str
) -> None:
    headers = {"host": "shop.example"} | ({"x-forwarded-proto": proto} if proto else {})
    view = original_request(Dialect.ENVOY, "GET", "/check/envoy/orders", headers, repeated)
    assert view.connection.scheme == scheme


def test_nginx_and_forward_auth_read_the_described_request() -> None:
    view = original_request(Dialect.NGINX, "GET", "/check/nginx", dict(NGINX), set())
    assert (view.method, view.host, view.path) == ("POST", "shop.example", "/orders/1")
    assert view.connection.scheme == "https"
    view = original_request(Dialect.FORWARD, "GET", "/check/forward?q", dict(FORWARD), set())
    assert (view.method, view.host, view.path) == ("DELETE", "shop.example", "/orders/1")


@pytest.mark.parametrize(
    ("forwarded", "host"),
    [("shop.example:8443", "shop.example"), ("[::1]:8443", "[::1]"), ("[::1]", "[::1]")],
)
def test_forward_auth_hosts_lose_their_port_as_caddy_and_traefik_match_them(
    forwarded: str, host: str
) -> None:
    headers = {**FORWARD, "x-forwarded-host": forwarded}
    assert original_request(Dialect.FORWARD, "GET", "/check/forward", headers, set()).host == host


@pytest.mark.parametrize("missing", sorted(NGINX))
def test_a_missing_description_header_is_refused(missing: str) -> None:
    headers = {k: v for k, v in NGINX.items() if k != missing}
    with pytest.raises(RequestError, match=f"{missing} missing"):
        original_request(Dialect.NGINX, "GET", "/check/nginx", headers, set())


@pytest.mark.parametrize(
    ("changes", "repeated", "message"),
    [
        ({}, {"x-forwarded-uri"}, "x-forwarded-uri sent twice"),
        ({}, {"x-forwarded-method"}, "sent twice"),
        ({"x-forwarded-host": "shop.example, evil.example"}, set(), "several proxies"),
        ({"x-forwarded-proto": "https,http"}, set(), "must be http or https"),
        ({"x-forwarded-proto": "ftp"}, set(), "must be http or https"),
        ({"x-forwarded-method": "GET /admin"}, set(), "not an HTTP method"),
        ({"x-forwarded-uri": "http://evil.example/x"}, set(), "path"),
        ({"x-forwarded-uri": ""}, set(), "missing"),
    ],
)
def test_contradictory_or_malformed_descriptions_are_refused(
    changes: dict[str, str], repeated: set[str], message: str
) -> None:
    with pytest.raises(RequestError, match=message):
        original_request(Dialect.FORWARD, "GET", "/check/forward", {**FORWARD, **changes}, repeated)


@pytest.mark.parametrize(
    ("headers", "repeated"),
    [({}, set()), ({"host": ""}, set()), ({"host": "a.example,b.example"}, {"host"})],
)
def test_envoy_checks_need_exactly_one_host(headers: dict[str, str], repeated: set[str]) -> None:
    with pytest.raises(RequestError, match="Host"):
        original_request(Dialect.ENVOY, "GET", "/check/envoy/x", headers, repeated)


ALLOW = Answer(200, "allowed", (("x-auth-subject", "alice"),), ("x-auth-email", "authorization"))
DENY = Answer(
    400,
    "request_invalid",
    (("content-type", "application/json"), ("www-authenticate", 'Bearer error="invalid_request"')),
    body='{"error":"invalid_request"}',
)


def test_envoy_allow_carries_identity_and_envoys_removal_header() -> None:
    assert render(ALLOW, Dialect.ENVOY).data == (
        b"HTTP/1.1 200 OK\r\n"
        b"x-auth-subject: alice\r\n"
        b"x-envoy-auth-headers-to-remove: x-auth-email,authorization\r\n"
        b"content-length: 0\r\n\r\n"
    )
    assert b"x-authz-remove: x-auth-email,authorization\r\n" in render(ALLOW, Dialect.FORWARD).data


def test_denials_pass_status_challenge_and_body() -> None:
    rendered = render(DENY, Dialect.FORWARD)
    assert rendered.data == (
        b"HTTP/1.1 400 Bad Request\r\n"
        b"content-type: application/json\r\n"
        b'www-authenticate: Bearer error="invalid_request"\r\n'
        b"content-length: 27\r\n\r\n"
        b'{"error":"invalid_request"}'
    )
    assert rendered.wire(head_only=True) == rendered.data[: -len(DENY.body)]
    closing = rendered.wire(close=True)
    assert closing.endswith(b"content-length: 27\r\nconnection: close\r\n\r\n" + DENY.body.encode())


def test_nginx_gets_403_for_a_bad_request() -> None:
    """NGINX turns any auth status but 2xx/401/403 into its own 500."""
    rendered = render(DENY, Dialect.NGINX)
    assert rendered.status == 403
    assert rendered.data.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert b'error="invalid_request"' in rendered.data


@pytest.mark.parametrize(
    ("status", "nginx_status"),
    [(302, 401), (303, 401), (404, 403), (418, 403), (500, 403), (401, 401), (403, 403)],
)
def test_nginx_gets_401_or_403_for_any_denial(status: int, nginx_status: int) -> None:
    """A denyWith status (or a sign-in redirect) NGINX cannot relay: a redirect is a 401,
    anything else a 403 (authz's own 503 stays: NGINX makes it its 500, an error). Forward
    auth (Caddy, Traefik) relays it as it is."""
    custom = Answer(status, "token_missing", (("content-type", "text/plain"),), body="no")
    assert render(custom, Dialect.NGINX).status == nginx_status
    assert render(custom, Dialect.FORWARD).status == status


def test_identity_values_go_out_as_utf8() -> None:
    answer = Answer(200, "allowed", (("x-auth-name", "Jos\u00e9"),))
    assert b"x-auth-name: Jos\xc3\xa9\r\n" in render(answer, Dialect.ENVOY).data


IDENTITY = ("x-auth-subject", "x-auth-email")


@pytest.mark.parametrize(
    ("answer", "dialect", "why"),
    [
        (Answer(200, "allowed", remove_query=("access_token",)), Dialect.ENVOY, "query string"),
        (Answer(200, "allowed", remove_query=("access_token",)), Dialect.NGINX, "query string"),
        (Answer(200, "allowed", (("cookie", "a=1"),)), Dialect.ENVOY, "Cookie"),
        (Answer(200, "allowed", (("cookie", "a=1"),)), Dialect.FORWARD, "cookie"),
        (Answer(200, "allowed", remove=("cookie",)), Dialect.NGINX, "cookie"),
        (Answer(200, "allowed", remove=("x-api-token",)), Dialect.FORWARD, "x-api-token"),
        (Answer(200, "allowed", remove=("cookie", "x-api-token")), Dialect.ENVOY, None),
        (
            Answer(200, "allowed", (("x-auth-subject", "a"),), ("x-auth-email", "authorization")),
            Dialect.NGINX,
            None,
        ),
    ],
)
def test_what_a_proxy_cannot_carry_out(answer: Answer, dialect: Dialect, why: str | None) -> None:
    found = unsupported(answer, dialect, IDENTITY)
    assert (found is None) if why is None else (found is not None and why in found), found
