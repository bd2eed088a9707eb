"""The Envoy writer: typed models, the contract of each transport, notes that explain it."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
import yaml
from envoy_data_plane.envoy.extensions.filters.http.ext_authz import v3 as ext_authz_v3

from authz.proxyconfig import envoy, envoy_notes, model
from authz.proxyconfig.model import Deployment, Transport
from authz.proxyconfig.render import to_yaml

ROUTES = (model.RouteBinding("/bound/", "bound"),)


def _bootstrap(**overrides: Any) -> dict[str, Any]:
    routes = ROUTES if overrides.get("transport") is not Transport.HTTP else ()
    data: dict[str, Any] = envoy.to_data(envoy.bootstrap(Deployment(routes=routes, **overrides)))
    return data


def _hcm(data: dict[str, Any]) -> dict[str, Any]:
    manager: dict[str, Any] = data["static_resources"]["listeners"][0]["filter_chains"][0][
        "filters"
    ][0]["typed_config"]
    return manager


def _cluster(data: dict[str, Any], name: str = "authz") -> dict[str, Any]:
    return next(c for c in data["static_resources"]["clusters"] if c["name"] == name)


def test_a_misspelt_field_fails_at_generation() -> None:
    with pytest.raises(pydantic.ValidationError, match="failure_mode_alow"):
        ext_authz_v3.ExtAuthz(failure_mode_alow=False)  # type: ignore[call-arg]


def test_grpc_filter_fails_closed_with_its_deadline() -> None:
    filters = _hcm(_bootstrap())["http_filters"]
    assert [f["name"] for f in filters] == [envoy.EXT_AUTHZ, envoy.ROUTER]
    config = filters[0]["typed_config"]
    assert config["failure_mode_allow"] is False  # shown although it is the default
    assert config["include_peer_certificate"] is False
    assert config["status_on_error"] == {"code": "ServiceUnavailable"}
    assert config["grpc_service"] == {"timeout": "0.500s", "envoy_grpc": {"cluster_name": "authz"}}


def test_connection_manager_canonicalises_paths_hosts_and_identity_headers() -> None:
    manager = _hcm(_bootstrap(identity_headers=("x-user-id",)))
    assert manager["normalize_path"] is True
    assert manager["merge_slashes"] is True
    assert manager["path_with_escaped_slashes_action"] == "UNESCAPE_AND_REDIRECT"
    assert manager["strip_any_host_port"] is True
    assert manager["strip_trailing_host_dot"] is True
    [removal] = manager["early_header_mutation_extensions"]
    matchers = [m["remove_on_match"]["key_matcher"] for m in removal["typed_config"]["mutations"]]
    assert matchers == [
        {"prefix": "x-auth-", "ignore_case": True},
        {"exact": "x-user-id", "ignore_case": True},
    ]


def test_a_route_naming_a_namespace_carries_it(capsys: pytest.CaptureFixture[str]) -> None:
    """A cluster AuthzPolicy's binding matches only routes that name its namespace."""
    from authz.proxyconfig.cli import main

    assert main(["envoy-snippet", "--route", "/orders/=shop/orders", "--route", "/x/=x"]) == 0
    routes = yaml.safe_load(capsys.readouterr().out)["routes"]
    settings = [r["typed_per_filter_config"][envoy.EXT_AUTHZ]["check_settings"] for r in routes]
    assert [r["name"] for r in routes] == ["policy-shop-orders", "policy-x"]
    assert settings == [
        {"context_extensions": {"policy": "orders", "authz.io/namespace": "shop"}},
        {"context_extensions": {"policy": "x"}},
    ]
    with pytest.raises(SystemExit):
        main(["envoy", "--route", "/o/=Shop_1/orders"])
    assert "'Shop_1' is not a namespace name" in capsys.readouterr().err


def test_bound_routes_carry_their_policy() -> None:
    routes = _hcm(_bootstrap())["route_config"]["virtual_hosts"][0]["routes"]
    assert [r["name"] for r in routes] == ["policy-bound", "default"]
    per_route = routes[0]["typed_per_filter_config"][envoy.EXT_AUTHZ]
    assert per_route["check_settings"] == {"context_extensions": {"policy": "bound"}}
    assert "typed_per_filter_config" not in routes[1]


@pytest.mark.parametrize(
    ("authz", "kind", "address"),
    [
        (
            "127.0.0.1:9001",
            "STATIC",
            {"socket_address": {"address": "127.0.0.1", "port_value": 9001}},
        ),
        ("unix:/run/authz/grpc.sock", "STATIC", {"pipe": {"path": "/run/authz/grpc.sock"}}),
        (
            "authz.authz-system.svc",
            "STRICT_DNS",
            {
                "socket_address": {
                    "address": "authz.authz-system.svc.cluster.local",
                    "port_value": 9001,
                }
            },
        ),
    ],
)
def test_authz_cluster_speaks_http2_to_each_kind_of_address(
    authz: str, kind: str, address: dict[str, Any]
) -> None:
    cluster = _cluster(_bootstrap(authz=model.parse_address(authz, model.GRPC_PORT)))
    assert cluster["type"] == kind
    assert cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"] == {
        "address": address
    }
    options = cluster["typed_extension_protocol_options"][envoy.HTTP_PROTOCOL_OPTIONS]
    assert options["explicit_http_config"] == {"http2_protocol_options": {}}


def test_http_transport_follows_the_contract() -> None:
    d = {"transport": Transport.HTTP, "authz": model.TcpAddress("127.0.0.1", 9003)}
    data = _bootstrap(**d, identity_headers=("x-user-id",), check_headers=("cookie",))
    config = _hcm(data)["http_filters"][0]["typed_config"]
    service = config["http_service"]
    assert service["path_prefix"] == "/check/envoy"
    assert service["server_uri"] == {
        "uri": "http://127.0.0.1:9003",
        "cluster": "authz",
        "timeout": "0.500s",
    }
    response = service["authorization_response"]
    assert response["allowed_upstream_headers"]["patterns"] == [
        {"prefix": "x-auth-", "ignore_case": True},
        {"exact": "x-user-id", "ignore_case": True},
    ]
    assert [p["exact"] for p in response["allowed_client_headers"]["patterns"]] == [
        "www-authenticate",
        "content-type",
        "set-cookie",
        "cache-control",
        "retry-after",
    ]
    assert "allowed_client_headers_on_success" not in response
    # the proof, the scheme and the correlation ids, then what the rules read
    sent = [p["exact"] for p in config["allowed_headers"]["patterns"]]
    assert sent == [*model.ENVOY_HTTP_REQUEST_HEADERS, "cookie"]
    assert sent[:3] == ["dpop", "x-forwarded-proto", "x-request-id"]
    assert "grpc_service" not in config
    assert "typed_extension_protocol_options" not in _cluster(data)  # HTTP/1.1 is enough


def test_browser_login_sends_what_sign_in_reads_and_passes_a_renewed_cookie() -> None:
    d = {"transport": Transport.HTTP, "authz": model.TcpAddress("127.0.0.1", 9003)}
    config = _hcm(_bootstrap(**d, browser_login=True))["http_filters"][0]["typed_config"]
    sent = [p["exact"] for p in config["allowed_headers"]["patterns"]]
    assert sent == [*model.ENVOY_HTTP_REQUEST_HEADERS, *model.LOGIN_CHECK_HEADERS]
    response = config["http_service"]["authorization_response"]
    on_success = response["allowed_client_headers_on_success"]["patterns"]
    assert on_success == [{"exact": "set-cookie", "ignore_case": True}]


def test_peer_certificates_reach_authz_on_either_transport() -> None:
    grpc = _hcm(_bootstrap(peer_certificates=True))
    assert grpc["http_filters"][0]["typed_config"]["include_peer_certificate"] is True
    http = _hcm(
        _bootstrap(
            peer_certificates=True,
            transport=Transport.HTTP,
            authz=model.TcpAddress("127.0.0.1", 9003),
        )
    )
    assert http["forward_client_cert_details"] == "SANITIZE_SET"
    assert http["set_current_client_cert_details"] == {"cert": True, "uri": True}
    allowed = http["http_filters"][0]["typed_config"]["allowed_headers"]["patterns"]
    assert {"exact": "x-forwarded-client-cert", "ignore_case": True} in allowed


def test_snippet_is_the_bootstrap_in_pieces() -> None:
    d = Deployment(routes=ROUTES, authz=model.parse_address("authz.authz-system.svc", 9001))
    whole = envoy.to_data(envoy.bootstrap(d))
    pieces = envoy.to_data(envoy.snippet(d))
    manager = _hcm(whole)
    for key, value in pieces["http_connection_manager"].items():
        assert manager[key] == value, key
    for route in pieces["routes"]:
        bound = next(
            r
            for r in manager["route_config"]["virtual_hosts"][0]["routes"]
            if r["name"] == route["name"]
        )
        assert {k: v for k, v in bound.items() if k != "route"} == route
    assert pieces["clusters"] == [_cluster(whole)]


def test_rendered_bootstrap_explains_the_settings() -> None:
    d = Deployment(routes=ROUTES, key_wait_ms=1000, timeout_ms=1500, status_on_error=403)
    text = to_yaml(envoy_notes.bootstrap_document(d, "authz proxy-config envoy --x"))
    assert yaml.safe_load(text) == envoy.to_data(envoy.bootstrap(d))
    lines = text.splitlines()

    def note_above(setting: str) -> str:
        index = next(i for i, line in enumerate(lines) if line.strip().startswith(setting))
        above = []
        for line in reversed(lines[:index]):
            if not line.strip().startswith("#"):
                break
            above.insert(0, line.strip().lstrip("# "))
        return " ".join(above)

    assert "Fail CLOSED" in note_above("failure_mode_allow: false")
    assert "up to 1000 ms" in note_above("timeout: 1.500s")
    assert "stay above 1100 ms" in note_above("timeout: 1.500s")
    assert "status of a policy denial" in note_above("status_on_error:")
    assert "CVE-2021-31920" in note_above("normalize_path: true")
    assert "trailing dot" in note_above("strip_any_host_port: true")
    assert "routing and ext_authz, for every route" in note_above(
        "early_header_mutation_extensions:"
    )
    assert "context_extensions are copied verbatim" in note_above("check_settings:")
    assert "gRPC needs HTTP/2" in note_above("typed_extension_protocol_options:")
    assert lines[0].startswith("# A complete Envoy")
    assert "Generated by `authz proxy-config envoy --x`" in text
