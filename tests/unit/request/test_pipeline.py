"""The pipeline's steps, table-tested on in-memory snapshots: select policy -> match rule ->
authenticate -> authorize -> respond. No YAML, no gRPC: documents come from builders."""

from __future__ import annotations

from typing import Any

import pytest

from authz.request.assembly import pipeline
from authz.request.cache import TokenCache
from authz.request.decision import Reason
from authz.request.view import request_view
from tests.support.docs import issuer, policy, rule
from tests.support.snapshots import bearer_token, check, serve
from tests.support.tokens import DROP, NOW

SHOP = policy(
    "shop",
    hosts=["shop.example", "*.shop.example"],
    rules=[
        rule("health", paths=["/healthz"], action="allowAnonymous"),
        rule("off", paths=["/admin/**"], action="deny"),
        rule("read", paths=["/orders/**"], methods=["GET"], requireScopes={"allOf": ["read"]}),
        rule("gold", paths=["/vip"], requireRoles={"anyOf": ["gold"]}),
        rule("acme", paths=["/tenant"], claims=[{"path": "org.id", "equals": "acme"}]),
    ],
    defaultAction="deny",
    response={"headers": [{"name": "x-auth-subject", "claim": "sub"}]},
)
BOUND = policy("bound", hosts=None, targets={"contextExtensions": {"route": "bound"}})
SERVED = serve(issuer(claims={"roles": ["roles"]}), SHOP, BOUND)


@pytest.mark.parametrize(
    ("path", "method", "token", "reason", "status"),
    [
        ("/healthz", "GET", None, Reason.ALLOWED_ANONYMOUS, 200),
        ("/healthz", "GET", "garbage", Reason.TOKEN_MALFORMED, 401),  # sent: must be valid
        ("/admin/x", "GET", None, Reason.RULE_DENIED, 403),  # decided before any token
        ("/orders/1", "GET", None, Reason.TOKEN_MISSING, 401),
        ("/orders/1", "GET", {"scope": "read"}, Reason.ALLOWED, 200),
        ("/orders/1", "GET", {"scope": "write"}, Reason.INSUFFICIENT_SCOPE, 403),
        ("/orders/1", "GET", {"scope": "read", "exp": NOW - 3600}, Reason.TOKEN_EXPIRED, 401),
        ("/orders/1", "GET", {"scope": "read", "aud": "other"}, Reason.AUDIENCE_MISMATCH, 401),
        ("/orders/1", "GET", {"scope": "read", "iss": "https://x"}, Reason.ISSUER_UNKNOWN, 401),
        ("/orders/1", "DELETE", {"scope": "read"}, Reason.NO_RULE, 403),
        ("/vip", "GET", {"roles": ["gold"]}, Reason.ALLOWED, 200),
        ("/vip", "GET", {"roles": ["silver"]}, Reason.INSUFFICIENT_ROLE, 403),
        ("/tenant", "GET", {"org": {"id": "acme"}}, Reason.ALLOWED, 200),
        ("/tenant", "GET", {"org": {"id": "evil"}}, Reason.CLAIM_MISMATCH, 403),
        ("/tenant", "GET", {"sub": DROP, "org": {"id": "acme"}}, Reason.ALLOWED, 200),
    ],
)
def test_steps_decide(
    path: str, method: str, token: dict[str, Any] | str | None, reason: Reason, status: int
) -> None:
    value = bearer_token(**token) if isinstance(token, dict) else token
    answer, outcome = check(SERVED, host="shop.example", path=path, method=method, token=value)
    assert (outcome.decision.reason, answer.status) == (reason, status)
    assert outcome.policy is not None and outcome.policy.id == "AuthzPolicy/default/shop"


@pytest.mark.parametrize(
    ("host", "context", "policy_id"),
    [
        ("shop.example", {}, "AuthzPolicy/default/shop"),
        ("a.b.shop.example", {}, "AuthzPolicy/default/shop"),  # wildcard: one or more labels
        ("shop.example", {"route": "bound"}, "AuthzPolicy/default/bound"),  # binding first
        ("other.example", {}, None),
    ],
)
def test_policy_selection(host: str, context: dict[str, str], policy_id: str | None) -> None:
    _, outcome = check(SERVED, host=host, context=context)
    assert (outcome.policy.id if outcome.policy else None) == policy_id


def test_no_policy_denies_unless_the_default_is_allow() -> None:
    answer, outcome = check(SERVED, host="other.example")
    assert (answer.status, outcome.decision.reason) == (403, Reason.NO_POLICY)
    answer, outcome = check(SERVED, host="other.example", default_allow=True)
    assert (answer.status, outcome.decision.reason) == (200, Reason.ALLOWED_BY_DEFAULT)


def test_allow_sets_identity_headers_and_removes_what_is_unset() -> None:
    answer, _ = check(
        SERVED, host="shop.example", path="/tenant", token=bearer_token(org={"id": "acme"})
    )
    assert dict(answer.headers) == {"x-auth-subject": "alice"}
    answer, _ = check(SERVED, host="shop.example", path="/healthz")
    assert answer.headers == () and answer.remove == ("x-auth-subject",)


def test_a_cached_identity_reuses_its_answer() -> None:
    checker = pipeline(SERVED, TokenCache(), clock=lambda: NOW)
    view = request_view(
        "GET",
        "shop.example",
        "/orders/1",
        {"authorization": f"Bearer {bearer_token(scope='read')}"},
        {},
    )
    first, outcome = checker.check(view)  # verified now, cached for the next request
    assert outcome.authentication is not None and not outcome.authentication.reused
    second, outcome = checker.check(view)
    assert outcome.authentication is not None and outcome.authentication.reused
    third, _ = checker.check(view)
    assert second == first and second.shared and not first.shared and third is second


def test_denials_carry_the_rfc6750_challenge() -> None:
    answer, _ = check(SERVED, host="shop.example", path="/orders/1", token=bearer_token(scope="x"))
    headers = dict(answer.headers)
    assert headers["www-authenticate"] == (
        'Bearer realm="authz", error="insufficient_scope", '
        'error_description="the token lacks a required scope", scope="read"'
    )


def test_an_invalid_document_is_reported_not_served() -> None:
    served = serve(issuer(), policy(rules=[rule("x", paths=["no-slash"])]))
    assert served.snapshot.policies == ()
    status = served.statuses["AuthzPolicy/default/api"]
    assert not status.accepted and any("paths" in p for p in status.problems)


def test_allowed_by_default_strips_every_identity_header() -> None:
    """Issue 11, item 18: with --default-action allow, a request no policy covers passed
    the client's own x-auth-subject (or any policy's identity header) to the upstream."""
    served = serve(
        issuer(),
        policy(
            hosts=["shop.example"], response={"headers": [{"name": "x-tenant", "claim": "tid"}]}
        ),
    )
    answer, outcome = check(served, host="elsewhere.example", default_allow=True)
    assert outcome.decision.reason == Reason.ALLOWED_BY_DEFAULT and answer.status == 200
    assert set(answer.remove) == {"x-auth-subject", "x-auth-issuer", "x-tenant"}
    assert answer.headers == ()


@pytest.mark.parametrize(
    ("claims", "header", "value"),
    [
        # Issue 11, item 8: scopes are SP-separated (RFC 6749 3.3); NBSP, TAB, U+2028 do not
        # separate, so "orders.x<NBSP>admin" grants nothing and is not a scope token at all.
        ({"scope": "read orders.x\u00a0admin"}, "x-scopes", "read"),
        ({"scope": "read\tadmin"}, "x-scopes", None),
        ({"scp": ["read", "a b", "c\u2028d", "ok"]}, "x-scopes", "read ok"),
        # Item 7: list elements holding the separator are left out, not read as two.
        ({"groups": ["users,admin", "staff"]}, "x-groups", "staff"),
        ({"groups": ["Domain Admins", "a\u0085b"]}, "x-groups", "Domain Admins"),
        ({"roles": ["viewer", "x,admin"]}, "x-roles", "viewer"),
        ({"sub": "alice\u2028x-evil: 1"}, "x-subject", None),
    ],
)
def test_identity_headers_cannot_be_misread(
    claims: dict[str, Any], header: str, value: str | None
) -> None:
    served = serve(
        issuer(claims={"roles": ["roles"]}),
        policy(
            rules=[rule("any", action="allowAnonymous")],
            response={
                "headers": [
                    {"name": "x-scopes", "claim": "$scopes"},
                    {"name": "x-roles", "claim": "$roles"},
                    {"name": "x-groups", "claim": "groups"},
                    {"name": "x-subject", "claim": "sub"},
                ]
            },
        ),
    )
    answer, outcome = check(served, token=bearer_token(**claims))
    assert answer.status == 200, outcome.decision
    assert dict(answer.headers).get(header) == value
    if value is None:
        assert header in answer.remove
    if header == "x-scopes" and outcome.decision.identity is not None:
        assert "admin" not in outcome.decision.identity.scopes


OPEN = serve(
    issuer(),
    issuer(
        "cookies",
        "https://cookies.test",
        tokenSources=[{"cookie": {"name": "session"}}, {"query": {"name": "access_token"}}],
    ),
    policy(
        issuers=["idp", "cookies"],
        rules=[rule("open", action="allowAnonymous")],
        response={"stripAuthorization": True},
    ),
)


@pytest.mark.parametrize(
    ("authorization", "removed"),
    [
        ("Bearer\tabc", True),  # not read as a bearer token: missing, so anonymous
        ("Bearerabc", True),
        ("bearer  abc", True),
        ("Basic dXNlcg==, Bearer abc", True),  # two headers joined
        ("Basic dXNlcg==", False),  # another scheme is the upstream's own business
    ],
)
def test_credentials_authz_did_not_verify_never_reach_the_upstream(
    authorization: str, removed: bool
) -> None:
    """Issue 11, item 6: on an anonymous route these reached the upstream as sent, even
    with stripAuthorization, where a lenient upstream could take them as verified."""
    answer, outcome = check(OPEN, headers={"authorization": authorization})
    assert outcome.decision.reason in (Reason.ALLOWED_ANONYMOUS, Reason.TOKEN_MALFORMED)
    if outcome.decision.allowed:
        assert ("authorization" in answer.remove) == removed


def test_strip_authorization_covers_cookies_and_query_parameters() -> None:
    token = bearer_token(iss="https://cookies.test")
    answer, outcome = check(OPEN, headers={"cookie": f"theme=dark; session={token}; lang=en"})
    assert outcome.decision.identity is not None
    assert dict(answer.headers)["cookie"] == "theme=dark; lang=en"
    answer, _ = check(OPEN, headers={"cookie": f"session={token}"})
    assert "cookie" in answer.remove
    answer, _ = check(OPEN, path=f"/x?access_token={token}&page=2")
    assert answer.remove_query == ("access_token",)
    answer, _ = check(OPEN, token=bearer_token())
    assert "authorization" in answer.remove and answer.remove_query == ()
