"""What Envoy (and so the client and the upstream) sees from one Check, over real gRPC."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.authz import CheckClient, check_server, header
from tests.support.tokens import AUDIENCE, ISSUER, NOW, claims, mint, signing_key

OTHER_ISSUER = "https://other.test"


def _docs(jwks_rs: dict[str, Any], jwks_es: dict[str, Any]) -> list[dict[str, Any]]:
    def meta(name: str) -> dict[str, str]:
        return {"name": name, "namespace": "shop"}

    return [
        {
            "apiVersion": "authz.io/v1alpha1",
            "kind": "JWTIssuer",
            "metadata": meta("main"),
            "spec": {
                "issuer": ISSUER,
                "jwks": jwks_rs,
                "audiences": [AUDIENCE],
                "claims": {"scopes": ["scope", "scp"], "roles": ["realm_access.roles"]},
                "tokenSources": [
                    {"header": {"name": "Authorization", "prefix": "Bearer "}},
                    {"query": {"name": "access_token"}},
                ],
            },
        },
        {
            "apiVersion": "authz.io/v1alpha1",
            "kind": "JWTIssuer",
            "metadata": meta("cookie-idp"),
            "spec": {
                "issuer": OTHER_ISSUER,
                "jwks": jwks_es,
                "tokenSources": [{"cookie": {"name": "session"}}],
            },
        },
        {
            "apiVersion": "authz.io/v1alpha1",
            "kind": "AuthzPolicy",
            "metadata": meta("shop"),
            "spec": {
                "targets": {"hosts": ["shop.example", "*.shop.example"]},
                "issuers": [{"name": "main"}, {"name": "cookie-idp"}],
                "rules": [
                    {
                        "name": "health",
                        "match": {"paths": ["/healthz"]},
                        "action": "allowAnonymous",
                    },
                    {"name": "admin-off", "match": {"paths": ["/admin/**"]}, "action": "deny"},
                    {
                        "name": "read",
                        "match": {"methods": ["GET"], "paths": ["/orders/**"]},
                        "requireScopes": {"allOf": ["orders.read"]},
                    },
                    {
                        "name": "write",
                        "match": {"methods": ["POST"], "paths": ["/orders"]},
                        "requireScopes": {
                            "allOf": ["orders.write"],
                            "anyOf": ["tier.gold", "tier.silver"],
                        },
                    },
                    {
                        "name": "ops",
                        "match": {"paths": ["/ops/**"]},
                        "requireRoles": {"anyOf": ["ops"]},
                    },
                    {
                        "name": "tenant",
                        "match": {"paths": ["/tenants/acme/**"]},
                        "claims": [
                            {"path": "tenant", "equals": "acme"},
                            {"path": "email_verified", "equals": True},
                        ],
                    },
                ],
                "response": {
                    "headers": [
                        {"name": "x-auth-subject", "claim": "sub"},
                        {"name": "x-auth-scopes", "claim": "$scopes"},
                        {"name": "x-auth-tenant", "claim": "tenant"},
                    ],
                    "stripAuthorization": True,
                },
            },
        },
        {
            "apiVersion": "authz.io/v1alpha1",
            "kind": "AuthzPolicy",
            "metadata": meta("bound"),
            "spec": {
                "targets": {"contextExtensions": {"policy": "bound"}},
                "issuers": [{"name": "main"}],
                "audiences": ["bound-api"],
                "rules": [{"name": "any-token", "match": {}}],
            },
        },
    ]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CheckClient]:
    directory = tmp_path_factory.mktemp("policies")
    docs = _docs({"keys": [signing_key("RS256")[1]]}, {"keys": [signing_key("ES256", "e1")[1]]})
    (directory / "policy.yaml").write_text(yaml.safe_dump_all(docs))
    with check_server(directory, clock=lambda: NOW) as c:
        assert all(s.accepted for s in c.store.statuses.values()), c.store.statuses
        yield c


def token(**overrides: Any) -> str:
    return mint(signing_key("RS256")[0], claims(**overrides))


def bearer(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}"}


def denial(response: Any) -> tuple[int, str | None, dict[str, Any]]:
    assert response.status.code != 0
    denied = response.denied_response
    return denied.status.code, header(response, "www-authenticate"), json.loads(denied.body)


def test_allow_sets_identity_headers_and_strips_the_token(client: CheckClient) -> None:
    headers = {**bearer(token(scope="orders.read extra")), "x-auth-tenant": "spoofed"}
    response = client.check(headers=headers, host="shop.example", path="/orders/7")
    assert response.status.code == 0
    ok = response.ok_response
    assert {h.header.key: h.header.value for h in ok.headers} == {
        "x-auth-subject": "alice",
        "x-auth-scopes": "orders.read extra",
    }
    # the token has no tenant claim: the client's own x-auth-tenant must not pass
    assert set(ok.headers_to_remove) == {"x-auth-tenant", "authorization"}
    metadata = response.dynamic_metadata
    assert metadata["subject"] == "alice" and metadata["issuer"] == ISSUER
    assert list(metadata["scopes"]) == ["orders.read", "extra"]
    assert metadata["rule"] == "read"


def test_missing_token_is_a_bare_challenge(client: CheckClient) -> None:
    status, challenge, body = denial(client.check(host="shop.example", path="/orders/7"))
    assert (status, challenge) == (401, 'Bearer realm="authz"')
    assert body["error"] == "unauthorized"


def test_other_scheme_counts_as_missing(client: CheckClient) -> None:
    response = client.check(
        headers={"authorization": "Basic dXNlcjpwdw=="}, host="shop.example", path="/orders/1"
    )
    assert denial(response)[:2] == (401, 'Bearer realm="authz"')


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("not-a-jwt", "token_malformed"),
        (token(exp=NOW - 3600), "token_expired"),
        (token(aud="someone-else"), "audience_mismatch"),
        (token(iss="https://evil.test"), "issuer_unknown"),
        (token()[:-4] + "AAAA", "signature_invalid"),
    ],
)
def test_bad_tokens_are_invalid_token(client: CheckClient, value: str, reason: str) -> None:
    response = client.check(headers=bearer(value), host="shop.example", path="/orders/1")
    status, challenge, body = denial(response)
    assert status == 401 and challenge is not None
    assert 'error="invalid_token"' in challenge
    assert response.status.message == reason
    assert value not in response.denied_response.body and value not in challenge
    assert body["error"] == "invalid_token"


def test_missing_scope_is_403_with_the_scopes_needed(client: CheckClient) -> None:
    response = client.check(
        headers=bearer(token(scope="orders.read")),
        host="shop.example",
        method="POST",
        path="/orders",
    )
    status, challenge, body = denial(response)
    assert status == 403 and body["error"] == "insufficient_scope"
    assert challenge == (
        'Bearer realm="authz", error="insufficient_scope", '
        'error_description="the token lacks a required scope", scope="orders.write tier.gold tier.silver"'
    )
    ok = client.check(
        headers=bearer(token(scp=["orders.write", "tier.silver"])),
        host="shop.example",
        method="POST",
        path="/orders",
    )
    assert ok.status.code == 0


def test_roles_and_claims(client: CheckClient) -> None:
    ops = token(realm_access={"roles": ["ops"]})
    assert client.check(headers=bearer(ops), host="shop.example", path="/ops/x").status.code == 0
    assert (
        denial(client.check(headers=bearer(token()), host="shop.example", path="/ops/x"))[0] == 403
    )
    acme = token(tenant="acme", email_verified=True)
    assert (
        client.check(headers=bearer(acme), host="shop.example", path="/tenants/acme/a").status.code
        == 0
    )
    unverified = token(tenant="acme", email_verified=False)
    response = client.check(headers=bearer(unverified), host="shop.example", path="/tenants/acme/a")
    assert denial(response)[0] == 403 and response.status.message == "claim_mismatch"


def test_two_tokens_are_invalid_request(client: CheckClient) -> None:
    value = token(scope="orders.read")
    response = client.check(
        headers=bearer(value), host="shop.example", path=f"/orders/1?access_token={value}"
    )
    status, challenge, body = denial(response)
    assert (status, body["error"]) == (400, "invalid_request")
    assert challenge is not None and 'error="invalid_request"' in challenge


def test_token_in_a_place_its_issuer_does_not_use(client: CheckClient) -> None:
    response = client.check(
        headers={"cookie": f"a=b; session={token()}"}, host="shop.example", path="/orders/1"
    )
    assert denial(response)[0] == 401 and response.status.message == "source_not_allowed"


def test_anonymous_route(client: CheckClient) -> None:
    assert client.check(host="shop.example", path="/healthz").status.code == 0
    bad = client.check(headers=bearer("garbage"), host="shop.example", path="/healthz")
    assert denial(bad)[0] == 401  # a token that is sent must be valid


def test_deny_rule_wins_even_after_path_tricks(client: CheckClient) -> None:
    value = token(scope="orders.read")
    for path in ("/admin/x", "/orders/../admin/x", "//admin/x", "/%61dmin/x", "/admin/x?y=1"):
        response = client.check(headers=bearer(value), host="shop.example", path=path)
        status, challenge, body = denial(response)
        assert (status, challenge, body["error"]) == (403, None, "access_denied"), path


def test_no_policy_denies_by_default(client: CheckClient) -> None:
    response = client.check(headers=bearer(token()), host="unknown.example", path="/")
    assert denial(response)[0] == 403 and response.status.message == "no_policy"


def test_no_matching_rule_uses_default_action(client: CheckClient) -> None:
    response = client.check(headers=bearer(token()), host="api.shop.example", path="/unlisted")
    assert denial(response)[0] == 403 and response.status.message == "no_rule"


def test_context_extension_binds_a_route_to_a_policy(client: CheckClient) -> None:
    bound = {"policy": "bound"}
    assert (
        denial(client.check(headers=bearer(token()), host="shop.example", context=bound))[0] == 401
    )
    ok = client.check(
        headers=bearer(token(aud=["bound-api", "x"])), host="shop.example", context=bound
    )
    assert ok.status.code == 0


def test_malformed_check_request_is_400(client: CheckClient) -> None:
    status, _, body = denial(client.check(host="shop.example", path=""))
    assert (status, body["error"]) == (400, "invalid_request")


def test_bytes_that_are_no_check_request_fail_the_call(client: CheckClient) -> None:
    """authz parses the request itself (grpcio passes the bytes through): a corrupt one
    fails the call with INTERNAL, as grpcio's own deserializer answered before."""
    with grpc.insecure_channel(f"127.0.0.1:{client.grpc_port}") as channel:
        check = channel.unary_unary("/envoy.service.auth.v3.Authorization/Check")
        with pytest.raises(grpc.RpcError) as failed:
            check(b"\xff\xff\xff", timeout=10)
    assert failed.value.code() == grpc.StatusCode.INTERNAL


def test_a_shared_answer_is_the_same_response_every_time(client: CheckClient) -> None:
    """The allow for a cached identity is serialized once and its bytes sent again."""
    value = token(scope="orders.read", jti="shared-answer")
    first, second, third = (
        client.check(headers=bearer(value), host="shop.example", path=f"/orders/{i}")
        for i in range(3)
    )
    assert first.status.code == 0
    assert first == second == third
    other = client.check(
        headers=bearer(token(sub="bob", scope="orders.read")), host="shop.example", path="/orders/1"
    )
    assert other.ok_response != first.ok_response
    assert {h.header.key: h.header.value for h in other.ok_response.headers}[
        "x-auth-subject"
    ] == "bob"


def test_verified_tokens_are_cached_and_kept_across_swaps(client: CheckClient) -> None:
    """A swap that leaves the issuer object unchanged keeps its cached tokens (issue 11,
    item 17; tests/unit/policy/test_reuse.py has the edits that void them)."""
    value = token(scope="orders.read", jti="cache-test")
    cache = client.cache
    hits = cache.hits
    for _ in range(3):
        assert (
            client.check(headers=bearer(value), host="shop.example", path="/orders/1").status.code
            == 0
        )
    assert cache.hits == hits + 2
    cached = len(cache)
    client.store.update(list(_objects(client)), {})
    assert len(cache) == cached
    assert (
        client.check(headers=bearer(value), host="shop.example", path="/orders/1").status.code == 0
    )
    assert cache.hits == hits + 3


def _objects(client: CheckClient) -> Iterator[Any]:
    from authz.policy.files import DirectorySource

    origin = next(iter(client.store.statuses.values())).origin
    yield from DirectorySource(Path(origin).parent).scan().objects


def test_default_allow(tmp_path: Path) -> None:
    with check_server(tmp_path, default_allow=True) as c:
        assert c.check(path="/anything").status.code == 0


_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    authorization=st.one_of(_TEXT, _TEXT.map(lambda t: f"Bearer {t}")),
    path=st.one_of(_TEXT, _TEXT.map(lambda t: f"/orders/{t}")),
    method=st.sampled_from(["GET", "POST", "get", "", "BREW"]),
    host=st.one_of(_TEXT, st.just("shop.example")),
    context=st.dictionaries(_TEXT, _TEXT, max_size=3),
)
def test_random_requests_never_crash_and_never_open(
    client: CheckClient,
    authorization: str,
    path: str,
    method: str,
    host: str,
    context: dict[str, str],
) -> None:
    """No forged token can be allowed on a protected route, and nothing raises."""
    request = CheckRequest()
    http = request.attributes.request.http
    http.method, http.host, http.path = method, host, path
    http.headers["authorization"] = authorization
    request.attributes.context_extensions.update(context)
    response, outcome = client.checker.check(request)
    if outcome.decision.allowed:
        assert outcome.decision.reason.value in ("allowed_anonymous",), outcome.decision
    else:
        assert response.denied_response.status.code in (400, 401, 403)


def test_the_connection_facts_envoy_sends_reach_the_request_view() -> None:
    """Source and destination addresses, the mTLS peer and its certificate, the scheme:
    what rule conditions and certificate-bound credentials read (read only when asked)."""
    from authz.transport.grpc import request_view_of

    request = CheckRequest()
    attrs = request.attributes
    attrs.request.http.method, attrs.request.http.path = "GET", "/"
    attrs.request.http.scheme = "https"
    attrs.source.address.socket_address.address = "10.1.2.3"
    attrs.source.address.socket_address.port_value = 51234
    attrs.destination.address.socket_address.port_value = 8443
    attrs.source.principal = "spiffe://cluster.local/ns/shop/sa/web"
    attrs.source.certificate = "-----BEGIN%20CERTIFICATE-----%0A..."
    connection = request_view_of(request).connection
    assert (connection.scheme, connection.source_address, connection.source_port) == (
        "https",
        "10.1.2.3",
        51234,
    )
    assert connection.destination_port == 8443
    assert connection.peer_principal == "spiffe://cluster.local/ns/shop/sa/web"
    assert connection.peer_certificate.startswith("-----BEGIN%20CERTIFICATE")
