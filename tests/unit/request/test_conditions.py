"""Rules that match on more than method, host and path (Istio's when/from/to, issue 12):
headers, the source address and X-Forwarded-For, the mTLS peer and its certificate, the
destination port, negative matches, and mesh callers that need no token. Decided through
the whole pipeline: what the client would see (status, challenge) and what matched."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from authz.policy.conditions import AddressBlocks, client_address, parse_address
from authz.request.view import KnownConnection, request_view
from tests.support.docs import issuer, policy, rule
from tests.support.pki import CA, pem_cert
from tests.support.snapshots import Served, bearer_token, check, serve

ALLOW = {"action": "allowAnonymous"}


def served(*rules: dict[str, Any], **spec: Any) -> Served:
    return serve(issuer(), policy(rules=list(rules), defaultAction="deny", **spec))


def decide(
    s: Served, *, headers: dict[str, str] | None = None, method: str = "GET", **conn: Any
) -> tuple[int, str | None]:
    answer, outcome = check(
        s,
        method=method,
        path=conn.pop("path", "/"),
        host=conn.pop("host", "api.example"),
        headers=headers,
        token=conn.pop("token", None),
        connection=KnownConnection(**conn),
    )
    return answer.status, outcome.decision.rule


# -- headers ---------------------------------------------------------------------------------

HEADERS = served(
    rule("canary", **ALLOW, match={"headers": [{"name": "X-Canary", "present": True}]}),
    rule("prod", **ALLOW, match={"headers": [{"name": "x-env", "in": ["prod", "live"]}]}),
    rule("v2", **ALLOW, match={"headers": [{"name": "accept", "prefix": "application/vnd.v2"}]}),
    rule("trace", **ALLOW, match={"headers": [{"name": "x-trace", "regex": "[0-9a-f]{8}"}]}),
    rule(
        "internal",
        **ALLOW,
        match={
            "paths": ["/internal/**"],
            "notHeaders": [{"name": "x-external", "present": True}],
        },
    ),
)


@pytest.mark.parametrize(
    ("headers", "path", "status", "matched"),
    [
        ({"x-canary": ""}, "/", 200, "canary"),  # present, even empty
        ({"x-env": "live"}, "/", 200, "prod"),
        ({"x-env": "Live"}, "/", 403, None),  # values compare exactly
        ({"accept": "application/vnd.v2+json"}, "/", 200, "v2"),
        ({"x-trace": "0af7651b"}, "/", 200, "trace"),
        ({"x-trace": "0af7651b0"}, "/", 403, None),  # the whole value must match
        ({}, "/internal/x", 200, "internal"),
        ({"x-external": "1"}, "/internal/x", 403, None),
        ({}, "/", 403, None),
    ],
)
def test_header_conditions(
    headers: dict[str, str], path: str, status: int, matched: str | None
) -> None:
    assert decide(HEADERS, headers=headers, path=path) == (status, matched or "(default)")


def test_repeated_headers_compare_joined_as_envoy_sends_them() -> None:
    assert decide(HEADERS, headers={"x-env": "prod,live"})[0] == 403


# -- addresses -------------------------------------------------------------------------------

ADDRESSES = served(
    rule("office", **ALLOW, match={"ipBlocks": ["10.0.0.0/8", "2001:db8::/32"]}),
    rule(
        "not-blocked",
        **ALLOW,
        match={"paths": ["/public"], "notIpBlocks": ["192.0.2.0/24", "198.51.100.7"]},
    ),
    rule("clients", **ALLOW, match={"paths": ["/client"], "remoteIpBlocks": ["203.0.113.0/24"]}),
    xffNumTrustedHops=1,
)


@pytest.mark.parametrize(
    ("source", "path", "xff", "status"),
    [
        ("10.1.2.3", "/", None, 200),
        ("::ffff:10.1.2.3", "/", None, 200),  # an IPv4-mapped address is the IPv4 one
        ("2001:db8:1::5", "/", None, 200),
        ("11.0.0.1", "/", None, 403),
        ("", "/", None, 403),  # no address known: no ipBlocks rule applies
        ("11.0.0.1", "/public", None, 200),
        ("198.51.100.7", "/public", None, 403),
        ("192.0.2.200", "/public", None, 403),
        # X-Forwarded-For only with the trusted hop count: the client is the 2nd from the right
        ("172.16.0.9", "/client", "203.0.113.5, 192.168.0.1", 200),
        # a client cannot choose its address by prepending entries
        ("172.16.0.9", "/client", "203.0.113.5, 198.51.100.1, 192.168.0.1", 403),
        ("172.16.0.9", "/client", "192.168.0.1", 403),  # too short: the peer's address counts
        ("172.16.0.9", "/client", "not-an-ip, 192.168.0.1", 403),
    ],
)
def test_address_conditions(source: str, path: str, xff: str | None, status: int) -> None:
    headers = {"x-forwarded-for": xff} if xff is not None else {}
    assert decide(ADDRESSES, headers=headers, path=path, source_address=source)[0] == status


def test_ipblocks_ignore_x_forwarded_for() -> None:
    headers = {"x-forwarded-for": "10.0.0.1"}
    assert decide(ADDRESSES, headers=headers, source_address="11.0.0.1")[0] == 403


def test_the_client_address_is_read_as_envoy_reads_it() -> None:
    def view(xff: str) -> Any:
        return request_view(
            "GET",
            "h",
            "/",
            {"x-forwarded-for": xff},
            {},
            connection=KnownConnection(source_address="192.0.2.1"),
        )

    assert client_address(view("a, b, c"), 0) == "c"
    assert client_address(view("a, b, c"), 2) == "a"
    assert client_address(view("a, b, c"), 3) == "192.0.2.1"
    assert client_address(view("a"), None) == "192.0.2.1"


def test_address_blocks_are_a_lookup_per_prefix_length() -> None:
    blocks = AddressBlocks.of([f"10.{i}.0.0/16" for i in range(200)] + ["10.0.0.1/8"])
    assert [s for s, _ in blocks.v4] == [16, 24]  # two prefix lengths, whatever the count
    assert blocks.contains(parse_address("10.199.3.4") or (0, 0))
    assert not blocks.contains(parse_address("11.0.0.1") or (0, 0))
    assert parse_address("fe80::1%eth0") is not None and parse_address("nope") is None


# -- the mTLS peer -----------------------------------------------------------------------------

SPIFFE = "spiffe://cluster.local/ns/{ns}/sa/{sa}"
MESH = serve(
    policy(
        "mesh",
        issuers=(),
        rules=[
            rule(
                "billing-writers",
                **ALLOW,
                match={
                    "paths": ["/billing/**"],
                    "principals": [SPIFFE.format(ns="billing", sa="*")],
                    "notPrincipals": [SPIFFE.format(ns="billing", sa="batch")],
                },
            ),
            rule("cluster", **ALLOW, match={"principals": ["spiffe://cluster.local/**"]}),
        ],
        defaultAction="deny",
    )
)


@pytest.mark.parametrize(
    ("principal", "path", "status", "matched"),
    [
        (SPIFFE.format(ns="billing", sa="api"), "/billing/x", 200, "billing-writers"),
        (SPIFFE.format(ns="billing", sa="batch"), "/billing/x", 200, "cluster"),
        (SPIFFE.format(ns="shop", sa="api"), "/orders", 200, "cluster"),
        ("spiffe://other.domain/ns/billing/sa/api", "/billing/x", 403, "(default)"),
        ("", "/billing/x", 403, "(default)"),  # no mTLS: no principal matches
    ],
)
def test_mesh_callers_by_spiffe_id_need_no_token(
    principal: str, path: str, status: int, matched: str
) -> None:
    assert decide(MESH, path=path, peer_principal=principal) == (status, matched)


def test_a_token_sent_by_a_mesh_caller_must_still_be_valid() -> None:
    principal = SPIFFE.format(ns="shop", sa="api")
    answer, outcome = check(
        MESH, token="not.a.jwt", connection=KnownConnection(peer_principal=principal)
    )
    assert answer.status == 401 and outcome.decision.reason.value == "token_malformed"


def test_not_principals_hold_without_mtls_as_in_istio() -> None:
    s = served(rule("anon", **ALLOW, match={"notPrincipals": ["spiffe://cluster.local/**"]}))
    assert decide(s)[0] == 200
    assert decide(s, peer_principal="spiffe://cluster.local/ns/a/sa/b")[0] == 403


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA.create("mesh-ca")


def certificate(ca: CA, **sans: Any) -> str:
    """A client certificate as Envoy sends it: URL-encoded PEM."""
    _, cert = ca.client("caller", **sans)
    return quote(pem_cert(cert).decode(), safe="")


def test_client_certificate_sans(ca: CA) -> None:
    s = served(
        rule("uri", **ALLOW, match={"clientCertificate": {"uriSans": ["spiffe://td/ns/*/sa/gw"]}}),
        rule("dns", **ALLOW, match={"clientCertificate": {"dnsSans": ["*.partners.example"]}}),
    )
    uri = certificate(ca, uris=["urn:x", "spiffe://td/ns/edge/sa/gw"])
    assert decide(s, peer_certificate=uri) == (200, "uri")
    dns = certificate(ca, dns=["API.Acme.Partners.example"])
    assert decide(s, peer_certificate=dns) == (200, "dns")
    assert decide(s, peer_certificate=certificate(ca, dns=["partners.example"]))[0] == 403
    assert decide(s, peer_certificate="garbage")[0] == 403
    assert decide(s)[0] == 403


# -- ports and negative matches ------------------------------------------------------------------


def test_ports_and_negative_matches() -> None:
    s = served(
        rule("admin-port", **ALLOW, match={"ports": [8443]}),
        rule(
            "reads",
            **ALLOW,
            match={
                "notMethods": ["POST", "PUT", "PATCH", "DELETE"],
                "notPaths": ["/private/**"],
                "notHosts": ["*.internal.example"],
                "notPorts": [9000],
            },
        ),
    )
    assert decide(s, method="POST", destination_port=8443) == (200, "admin-port")
    assert decide(s, method="POST", destination_port=8080)[0] == 403
    assert decide(s, destination_port=8080) == (200, "reads")
    assert decide(s, path="/private/x", destination_port=8080)[0] == 403
    assert decide(s, host="db.internal.example", destination_port=8080)[0] == 403
    assert decide(s, destination_port=9000)[0] == 403
    assert decide(s)[0] == 403  # port unknown: neither ports nor notPorts holds


def test_conditions_come_before_the_token() -> None:
    """A rule that does not match never reads the credential: the next rule decides."""
    s = served(
        rule("office", **ALLOW, match={"ipBlocks": ["10.0.0.0/8"]}),
        rule("everyone-else", requireScopes={"allOf": ["read"]}),
    )
    answer, outcome = check(s, connection=KnownConnection(source_address="11.0.0.1"))
    assert answer.status == 401 and outcome.decision.rule == "everyone-else"
    assert dict(answer.headers)["www-authenticate"] == 'Bearer realm="authz"'
    answer, _ = check(
        s,
        token=bearer_token(scope="read"),
        connection=KnownConnection(source_address="11.0.0.1"),
    )
    assert answer.status == 200


def test_invalid_blocks_and_regexes_are_reported_not_served() -> None:
    s = serve(
        issuer(),
        policy("bad-cidr", rules=[rule(match={"ipBlocks": ["10.0.0.0/33"]})]),
        policy(
            "bad-regex",
            hosts=["b"],
            rules=[rule(match={"headers": [{"name": "a", "regex": "(x"}]})],
        ),
    )
    cidr = s.statuses["AuthzPolicy/default/bad-cidr"]
    regex = s.statuses["AuthzPolicy/default/bad-regex"]
    assert not cidr.accepted and "spec.rules[0].match: ipBlocks:" in cidr.problems[0]
    assert not regex.accepted and "invalid regular expression" in regex.problems[0]
