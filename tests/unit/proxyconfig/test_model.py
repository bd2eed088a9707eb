"""Deployment inputs: addresses as users write them, and the limits that keep them safe."""

from __future__ import annotations

import pytest

from authz.policy.schema import SPECS
from authz.proxyconfig import model
from authz.proxyconfig.model import (
    Deployment,
    RouteBinding,
    ServiceAddress,
    TcpAddress,
    Transport,
    UnixAddress,
    parse_address,
)


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:9001", TcpAddress("127.0.0.1", 9001)),
        ("127.0.0.1", TcpAddress("127.0.0.1", 7)),
        ("[::1]:9001", TcpAddress("::1", 9001)),
        ("::1", TcpAddress("::1", 7)),
        ("Authz.Example.COM:443", TcpAddress("authz.example.com", 443)),
        ("unix:/run/authz/grpc.sock", UnixAddress("/run/authz/grpc.sock")),
        ("unix:///run/authz/grpc.sock", UnixAddress("/run/authz/grpc.sock")),
        ("authz.authz-system.svc", ServiceAddress("authz", "authz-system", 7)),
        ("authz.authz-system.svc:9003", ServiceAddress("authz", "authz-system", 9003)),
        (
            "authz.ns.svc.corp.local:1",
            ServiceAddress("authz", "ns", 1, domain="corp.local"),
        ),
    ],
)
def test_addresses(text: str, address: model.Address) -> None:
    assert parse_address(text, 7) == address


def test_service_host_and_text() -> None:
    service = parse_address("authz.authz-system.svc", 9001)
    assert str(service) == "authz.authz-system.svc.cluster.local:9001"
    assert str(TcpAddress("::1", 1)) == "[::1]:1"


@pytest.mark.parametrize("text", ["unix:relative.sock", ":9001", "host:port", "host:70000", "[::1"])
def test_bad_addresses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text, 9001)


def test_key_wait_limits_follow_the_policy_schema() -> None:
    wait = SPECS["JWTIssuer"]["properties"]["fetch"]["properties"]["unknownKidWaitMillis"]
    assert (wait["default"], wait["maximum"]) == (model.KEY_WAIT_DEFAULT_MS, model.KEY_WAIT_MAX_MS)


def test_the_timeout_must_outlast_the_key_wait() -> None:
    assert Deployment(timeout_ms=350).timeout_ms == 350
    with pytest.raises(ValueError, match="at least 350 ms"):
        Deployment(timeout_ms=349)
    with pytest.raises(ValueError, match="at least 5100 ms"):
        Deployment(key_wait_ms=5000, timeout_ms=5000)
    with pytest.raises(ValueError, match="key wait"):
        Deployment(key_wait_ms=5001, timeout_ms=9000)


@pytest.mark.parametrize("status", [200, 302, 399, 600])
def test_an_outage_is_never_a_success(status: int) -> None:
    with pytest.raises(ValueError, match="4xx or 5xx"):
        Deployment(status_on_error=status)


def test_header_names_and_routes_are_checked() -> None:
    with pytest.raises(ValueError, match="header name"):
        Deployment(identity_headers=("X User",))
    with pytest.raises(ValueError, match="start with '/'"):
        RouteBinding("bound", "bound")
    with pytest.raises(ValueError, match="TCP"):
        Deployment(transport=Transport.HTTP, authz=UnixAddress("/run/a.sock"))


def test_identity_names_are_the_contract_plus_extras() -> None:
    d = Deployment(identity_headers=("x-auth-scopes", "x-auth-subject"))
    assert d.identity_names == ("x-auth-subject", "x-auth-issuer", "x-auth-scopes")


def test_route_bindings_need_grpc_checks() -> None:
    """Envoy's http_service never sends context_extensions: a binding would be ignored."""
    with pytest.raises(ValueError, match="gRPC checks only"):
        Deployment(
            transport=Transport.HTTP,
            authz=TcpAddress("127.0.0.1", 9003),
            routes=(RouteBinding("/bound/", "bound"),),
        )
    with pytest.raises(ValueError, match="HTTP transport"):
        Deployment(proxy_secret=True)
