"""What a token must be and say (issue 12): typed claim comparisons, issuer-level token-type
checks that answer 401, tenant binding for issuer templates, and rules that narrow the
policy's issuers and audiences. Decided through the pipeline; asserts status and challenge."""

from __future__ import annotations

from typing import Any

import pytest

from authz.request.cache import TokenCache
from authz.request.decision import Reason
from tests.support.docs import issuer, jwks_of, policy, rule
from tests.support.snapshots import Served, bearer_token, check, serve
from tests.support.tokens import DROP, NOW, claims, mint, signing_key

INVALID = 'Bearer realm="authz", error="invalid_token", error_description='


def decide(s: Served, token: str, path: str = "/") -> tuple[int, Reason, str | None]:
    answer, outcome = check(s, path=path, token=token)
    return answer.status, outcome.decision.reason, dict(answer.headers).get("www-authenticate")


def claim_rule(*conditions: dict[str, Any]) -> Served:
    return serve(issuer(), policy(rules=[rule("r", claims=list(conditions))]))


# -- typed claim comparisons -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "value", "allowed"),
    [
        # a Firebase custom claim admin: "true" must not satisfy admin == true
        ({"equals": True}, True, True),
        ({"equals": True}, "true", False),
        ({"equals": "true"}, True, False),
        ({"equals": "true"}, "true", True),  # string conditions keep their meaning on strings
        ({"equals": 1}, 1, True),
        ({"equals": 1}, 1.0, True),  # JSON numbers compare by value
        ({"equals": 1}, "1", False),
        ({"equals": 1}, True, False),  # a boolean is not a number
        ({"equals": "acme"}, ["x", "acme"], True),  # any element of an array claim
        ({"equals": ["a", "b"]}, ["a", "b"], True),  # an array value compares whole
        ({"equals": {"k": 1}}, {"k": 1}, True),
        ({"in": ["gold", 2, False]}, 2, True),
        ({"in": ["gold", 2, False]}, "2", False),
        ({"in": ["gold", 2, False]}, False, True),
        ({"contains": "admin"}, ["user", "admin"], True),
        ({"contains": "admin"}, "admin", False),  # contains needs an array
        ({"contains": 3}, [1, 2, 3], True),
        ({"atLeast": 2}, 2, True),
        ({"atLeast": 2}, 3.5, True),
        ({"atLeast": 2}, 1, False),
        ({"atLeast": 2}, "3", False),  # a string is not a number
        ({"atLeast": 2}, True, False),
        ({"atLeast": 1, "atMost": 3}, 4, False),
        ({"atMost": 3}, [9, 1], True),
        ({"regex": "[0-9]+"}, "42", True),
        ({"regex": "[0-9]+"}, 42, False),  # a regex reads strings only
    ],
)
def test_typed_comparisons(condition: dict[str, Any], value: Any, allowed: bool) -> None:
    s = claim_rule({"path": "c", **condition})
    status, reason, challenge = decide(s, bearer_token(c=value))
    assert (status, reason) == ((200, Reason.ALLOWED) if allowed else (403, Reason.CLAIM_MISMATCH))
    if not allowed:
        assert challenge is not None and 'error="insufficient_scope"' in challenge


def test_max_age_of_a_sign_in() -> None:
    s = claim_rule({"path": "auth_time", "maxAgeSeconds": 300})
    assert decide(s, bearer_token(auth_time=NOW - 299))[0] == 200
    assert decide(s, bearer_token(auth_time=NOW - 301))[1] == Reason.CLAIM_MISMATCH
    assert decide(s, bearer_token(auth_time=str(NOW)))[1] == Reason.CLAIM_MISMATCH
    assert decide(s, bearer_token())[1] == Reason.CLAIM_MISMATCH


def test_the_decision_names_the_failed_condition() -> None:
    s = claim_rule({"path": "admin", "equals": True})
    _, outcome = check(s, token=bearer_token(admin="true"))
    assert outcome.decision.detail == "claim condition failed: admin == true"


# -- token-type checks: 401, not 403 -------------------------------------------------------------


def cognito() -> Served:
    return serve(
        issuer(
            audienceClaim="client_id",
            audiences=["app-client"],
            requiredClaims=[{"path": "token_use", "equals": "access"}],
        ),
        policy(rules=[rule("r", requireScopes={"allOf": ["orders/read"]})]),
    )


def test_an_id_token_is_not_a_credential_for_an_api() -> None:
    s = cognito()
    access = bearer_token(aud=DROP, client_id="app-client", token_use="access", scope="orders/read")
    assert decide(s, access)[:2] == (200, Reason.ALLOWED)
    id_token = bearer_token(aud=DROP, client_id="app-client", token_use="id", scope="orders/read")
    status, reason, challenge = decide(s, id_token)
    assert (status, reason) == (401, Reason.REQUIRED_CLAIM_MISMATCH)
    assert challenge == INVALID + '"the token is not of the accepted kind"'


def test_keycloak_typ_claim_also_on_a_cached_token() -> None:
    s = serve(
        issuer(requiredClaims=[{"path": "typ", "equals": "Bearer"}]),
        policy(rules=[rule("r")]),
    )
    assert decide(s, bearer_token(typ="Bearer"))[0] == 200
    assert decide(s, bearer_token())[:2] == (401, Reason.REQUIRED_CLAIM_MISMATCH)
    cache = TokenCache()
    id_token = bearer_token(typ="ID")
    for _ in range(2):  # verified once and cached: the check holds on the cache hit too
        answer, outcome = check(s, token=id_token, cache=cache)
        assert (answer.status, outcome.decision.reason) == (401, Reason.REQUIRED_CLAIM_MISMATCH)
    assert outcome.authentication is not None and outcome.authentication.verified is not None
    assert cache.hits == 1


@pytest.mark.parametrize(
    ("required", "typ", "status"),
    [
        ("at+jwt", "at+jwt", 200),
        ("at+jwt", "application/at+jwt", 200),  # RFC 7515 4.1.9: the prefix may be omitted
        ("application/at+jwt", "AT+JWT", 200),
        ("at+jwt", "JWT", 401),
        ("at+jwt", None, 401),
    ],
)
def test_require_typ_accepts_both_spellings(required: str, typ: str | None, status: int) -> None:
    s = serve(issuer(requireTyp=required), policy())
    token = mint(signing_key("ES256")[0], claims(), typ=typ)
    assert decide(s, token)[0] == status


# -- tenant binding -------------------------------------------------------------------------------

ENTRA = "https://login.microsoftonline.com/{tenant}/v2.0"
TENANT_A, TENANT_B = "11111111-aaaa-4aaa-8aaa-111111111111", "22222222-bbbb-4bbb-8bbb-222222222222"


def test_tenant_claim_must_name_the_tenant_of_iss() -> None:
    s = serve(
        issuer(iss=ENTRA, tenants=[TENANT_A, TENANT_B], tenantClaim="tid"),
        policy(),
    )
    a = ENTRA.format(tenant=TENANT_A)
    assert decide(s, bearer_token(iss=a, tid=TENANT_A))[0] == 200
    status, reason, challenge = decide(s, bearer_token(iss=a, tid=TENANT_B))
    assert (status, reason) == (401, Reason.TENANT_MISMATCH)
    assert challenge == INVALID + '"the token tenant does not match its issuer"'
    assert decide(s, bearer_token(iss=a))[1] == Reason.TENANT_MISMATCH


def test_without_tenant_claim_a_template_binds_nothing() -> None:
    s = serve(issuer(iss=ENTRA, tenants=[TENANT_A]), policy())
    a = ENTRA.format(tenant=TENANT_A)
    assert decide(s, bearer_token(iss=a, tid=TENANT_B))[0] == 200


# -- rules that narrow issuers and audiences ---------------------------------------------------------

PARTNER = "https://partner.test"


def two_issuers() -> Served:
    return serve(
        issuer(),
        issuer("partner", PARTNER, jwks=jwks_of("ES256", "p1"), audiences=["api", "admin"]),
        policy(
            issuers=("idp", "partner"),
            rules=[
                rule("partners-only", paths=["/partner/**"], issuers=[{"name": "partner"}]),
                rule("admin", paths=["/admin/**"], audiences=["admin"]),
                rule(
                    "public",
                    paths=["/public"],
                    action="allowAnonymous",
                    issuers=[{"name": "idp"}],
                ),
                rule("rest"),
            ],
            audiences=["api", "admin"],
        ),
    )


def partner_token(**overrides: Any) -> str:
    return mint(signing_key("ES256", "p1")[0], claims(iss=PARTNER, **overrides))


def test_a_rule_accepts_only_its_issuers() -> None:
    s = two_issuers()
    assert decide(s, partner_token(), "/partner/x")[0] == 200
    status, reason, challenge = decide(s, bearer_token(), "/partner/x")
    assert (status, reason) == (401, Reason.ISSUER_NOT_TRUSTED)
    assert challenge == INVALID + '"the token issuer is not trusted"'
    assert decide(s, bearer_token(), "/other")[0] == 200  # the policy still trusts both


def test_a_sent_token_must_suit_an_anonymous_rule_too() -> None:
    s = two_issuers()
    answer, _ = check(s, path="/public")
    assert answer.status == 200
    assert decide(s, partner_token(), "/public")[:2] == (401, Reason.ISSUER_NOT_TRUSTED)


def test_a_rule_narrows_the_audiences() -> None:
    s = two_issuers()
    assert decide(s, partner_token(aud=["api", "admin"]), "/admin/x")[0] == 200
    assert decide(s, partner_token(aud="api"), "/admin/x")[:2] == (401, Reason.AUDIENCE_MISMATCH)


def test_a_rule_issuer_must_be_one_of_the_policys() -> None:
    s = serve(
        issuer(),
        issuer("other", "https://other.test"),
        policy(rules=[rule("r", issuers=[{"name": "other"}])]),
    )
    status = s.statuses["AuthzPolicy/default/api"]
    assert not status.accepted
    assert status.problems == (
        "spec.rules[0].issuers: JWTIssuer/default/other is not one of the policy's issuers",
    )


def test_required_claims_hold_for_introspected_tokens_too(tmp_path: Any) -> None:
    """An issuer's requiredClaims describe every token of it: an opaque token whose
    introspection answer lacks them is not a credential either (401)."""
    from authz.introspection.manager import IntrospectionManager
    from tests.support.introspection_server import ClientCheck, IntrospectionServer

    (tmp_path / "secret").write_text("s3\n")
    opaque = "ory_at_Zm9vYmFy.c2lnbmF0dXJl"
    managers = [IntrospectionManager(), IntrospectionManager()]  # one per answer: no cache
    answer = {"active": True, "iss": "https://issuer.test", "sub": "bot", "aud": ["api"]}
    answer |= {"iat": NOW - 10, "exp": NOW + 600}
    required = [{"path": "token_use", "equals": "access"}]
    try:
        with IntrospectionServer(ClientCheck("client_secret_post", "authz", "s3")) as endpoint:
            introspection = {
                "endpoint": endpoint.url,
                "allowInsecureHttp": True,
                "clientAuth": {
                    "method": "client_secret_post",
                    "clientId": "authz",
                    "clientSecretFile": str(tmp_path / "secret"),
                },
            }
            for manager, token_use, status in zip(
                managers, ("id", "access"), (401, 200), strict=True
            ):
                endpoint.answer(opaque, answer | {"token_use": token_use})
                s = serve(
                    issuer(introspection=introspection, requiredClaims=required),
                    policy(),
                    introspection=manager,
                )
                reply, outcome = check(s, token=opaque)
                assert reply.status == status, outcome.decision
    finally:
        for manager in managers:
            manager.close()
