"""Custom deny answers per policy or rule (denyWith, issue 12): status, body, headers, or a
redirect carrying the original URL; the RFC 6750 challenge stays unless overridden."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from authz.request.assembly import pipeline
from authz.request.cache import TokenCache
from authz.request.view import KnownConnection, request_view
from authz.transport.dialects import Dialect, render
from authz.transport.grpc import GrpcChecker
from tests.support.docs import issuer, policy, rule
from tests.support.snapshots import Served, bearer_token, check, serve
from tests.support.tokens import NOW

SIGN_IN = {
    "status": 302,
    "redirect": {"url": "https://login.example/start?app=shop", "originalUrlParameter": "rd"},
}


def shop(**deny: Any) -> Served:
    return serve(
        issuer(
            tokenSources=[
                {"header": {"name": "authorization", "prefix": "Bearer "}},
                {"query": {"name": "access_token"}},
            ]
        ),
        policy(
            rules=[
                rule("health", paths=["/healthz"], action="allowAnonymous"),
                rule(
                    "admin",
                    paths=["/admin/**"],
                    requireRoles={"anyOf": ["admin"]},
                    denyWith={
                        "unauthorized": {
                            "status": 404,
                            "body": "not found",
                            "headers": [{"name": "Cache-Control", "value": "no-store"}],
                        }
                    },
                ),
                rule("read", paths=["/orders/**"], requireScopes={"allOf": ["read"]}),
                rule("off", paths=["/off"], action="deny"),
            ],
            **deny,
        ),
    )


def test_a_redirect_to_sign_in_carries_the_original_url() -> None:
    s = shop(denyWith={"unauthenticated": SIGN_IN})
    answer, outcome = check(
        s,
        host="shop.example",
        path="/orders/7?view=full",
        connection=KnownConnection(scheme="https"),
    )
    headers = dict(answer.headers)
    assert (answer.status, outcome.decision.reason.value) == (302, "token_missing")
    location = urlsplit(headers["location"])
    assert (location.scheme, location.netloc, location.path) == ("https", "login.example", "/start")
    assert parse_qs(location.query) == {
        "app": ["shop"],
        "rd": ["https://shop.example/orders/7?view=full"],
    }
    assert headers["www-authenticate"] == 'Bearer realm="authz"'  # still RFC 6750-correct
    assert answer.body == "" and "content-type" not in headers
    assert not answer.shared  # it depends on the request


def test_a_token_in_the_query_never_travels_in_the_redirect() -> None:
    s = shop(denyWith={"unauthenticated": SIGN_IN})
    answer, _ = check(s, host="shop.example", path="/orders/7?a=1&access_token=expired.x.y")
    rd = parse_qs(urlsplit(dict(answer.headers)["location"]).query)["rd"][0]
    assert answer.status == 302 and rd == "https://shop.example/orders/7?a=1"


def test_a_rule_answer_replaces_the_policy_answer_for_its_kind() -> None:
    s = shop(denyWith={"unauthorized": {"status": 403, "body": "{}", "headers": []}})
    answer, _ = check(s, path="/admin/x", token=bearer_token())
    headers = dict(answer.headers)
    assert (answer.status, answer.body) == (404, "not found")
    assert headers["cache-control"] == "no-store"
    assert headers["content-type"] == "text/plain; charset=utf-8"
    # the 403's challenge: the policy did not override it
    assert headers["www-authenticate"].startswith(
        'Bearer realm="authz", error="insufficient_scope"'
    )
    # no unauthenticated answer on the rule: the policy's (none here) and authz's own 401
    answer, _ = check(s, path="/admin/x")
    assert answer.status == 401 and answer.body.startswith('{"error":"unauthorized"')


def test_the_policy_answer_covers_its_rules_and_default() -> None:
    s = shop(
        denyWith={
            "unauthorized": {
                "body": '{"message":"ask the shop team"}',
                "headers": [{"name": "content-type", "value": "application/json"}],
            }
        }
    )
    for path in ("/off", "/nowhere"):
        answer, _ = check(s, path=path, token=bearer_token())
        assert (answer.status, answer.body) == (403, '{"message":"ask the shop team"}')
        assert dict(answer.headers)["content-type"] == "application/json"
        assert answer.shared  # nothing request-specific: built once and reused


def test_an_explicit_challenge_overrides_rfc6750() -> None:
    s = shop(
        denyWith={
            "unauthenticated": {
                "headers": [{"name": "WWW-Authenticate", "value": 'Bearer realm="shop"'}]
            }
        }
    )
    answer, _ = check(s, path="/orders/1", token="garbage")
    headers = [(k, v) for k, v in answer.headers if k == "www-authenticate"]
    assert answer.status == 401 and headers == [("www-authenticate", 'Bearer realm="shop"')]
    assert answer.body.startswith('{"error":"invalid_token"')  # the default body stays


def test_bad_requests_and_allowed_requests_are_untouched() -> None:
    s = shop(denyWith={"unauthenticated": SIGN_IN, "unauthorized": {"status": 404}})
    answer, _ = check(s, path="/healthz")
    assert answer.status == 200
    answer, _ = check(s, path="/orders/1", headers={"authorization": "Bearer a, Bearer b"})
    assert answer.status == 400


def test_envoy_gets_the_custom_status() -> None:
    """gRPC: a redirect is a denial with the custom HTTP status (not a gRPC error); its
    gRPC code is UNAUTHENTICATED, as for browser sign-in's redirects."""
    s = shop(denyWith={"unauthenticated": SIGN_IN})
    checker = pipeline(s, TokenCache(0), clock=lambda: NOW)
    answer, _ = checker.check(request_view("GET", "shop.example", "/orders/1", {}, {}))
    response = GrpcChecker(checker).render(answer)
    assert response.status.code == 16 and response.denied_response.status.code == 302
    location = {h.header.key: h.header.value for h in response.denied_response.headers}
    assert location["location"].startswith("https://login.example/start?app=shop&rd=")


def test_the_http_transport_renders_any_custom_status() -> None:
    s = shop(denyWith={"unauthenticated": SIGN_IN, "unauthorized": {"status": 599}})
    checker = pipeline(s, TokenCache(0), clock=lambda: NOW)
    answer, _ = checker.check(request_view("GET", "shop.example", "/orders/1", {}, {}))
    rendered = render(answer, Dialect.ENVOY).data
    assert rendered.startswith(b"HTTP/1.1 302 Found\r\n")
    assert b"\r\nlocation: https://login.example/start?app=shop&rd=" in rendered
    answer, _ = checker.check(request_view("GET", "shop.example", "/off", {}, {}))
    assert render(answer, Dialect.FORWARD).data.startswith(b"HTTP/1.1 599 \r\n")


def test_a_custom_answer_keeps_the_dpop_challenge() -> None:
    """Under a policy that reads DPoP, authz's challenge offers both schemes (RFC 9449
    7.1); a denyWith answer keeps it, as it keeps the Bearer one."""
    s = serve(
        issuer(),
        policy(dpop={}, denyWith={"unauthenticated": {"status": 401, "body": "sign in"}}),
    )
    answer, _ = check(s)
    headers = dict(answer.headers)
    assert (answer.status, answer.body) == (401, "sign in")
    assert headers["www-authenticate"].startswith('Bearer realm="authz", DPoP realm="authz"')
