"""`authz proxy-config --check`: one deliberately broken config per setting, each reported.

Every case starts from the generator's own bootstrap (which must pass) and breaks exactly one
thing; the checker must name that setting and nothing else, and the command exits 1.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.proxyconfig import check, envoy, model
from authz.proxyconfig.cli import main

Config = dict[str, Any]


def _generated(transport: str = "grpc", **overrides: Any) -> Config:
    port = model.GRPC_PORT if transport == "grpc" else model.HTTP_CHECK_PORT
    d = model.Deployment(
        transport=model.Transport(transport),
        authz=model.TcpAddress("127.0.0.1", port),
        # Route bindings are context_extensions, which only gRPC checks carry.
        routes=(model.RouteBinding("/bound/", "bound"),) if transport == "grpc" else (),
        **overrides,
    )
    data: Config = envoy.to_data(envoy.bootstrap(d))
    return data


def hcm(config: Config) -> Config:
    manager: Config = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]
    return manager


def ext_authz(config: Config) -> Config:
    found: Config = hcm(config)["http_filters"][0]["typed_config"]
    assert found["@type"].endswith("ext_authz.v3.ExtAuthz")
    return found


def http_service(config: Config) -> Config:
    service: Config = ext_authz(config)["http_service"]
    return service


def routes(config: Config) -> list[Config]:
    found: list[Config] = hcm(config)["route_config"]["virtual_hosts"][0]["routes"]
    return found


def _set(path: Callable[[Config], Config], key: str, value: Any) -> Callable[[Config], None]:
    def mutate(config: Config) -> None:
        path(config)[key] = value

    return mutate


def _drop(path: Callable[[Config], Config], key: str) -> Callable[[Config], None]:
    def mutate(config: Config) -> None:
        del path(config)[key]

    return mutate


def _grpc_service(config: Config) -> Config:
    service: Config = ext_authz(config)["grpc_service"]
    return service


def _server_uri(config: Config) -> Config:
    uri: Config = http_service(config)["server_uri"]
    return uri


def _response(config: Config) -> Config:
    response: Config = http_service(config)["authorization_response"]
    return response


def _strip_matching_port_only(config: Config) -> None:
    del hcm(config)["strip_any_host_port"]
    hcm(config)["strip_matching_host_port"] = True


def _other_prefix_removed(config: Config) -> None:
    mutation = hcm(config)["early_header_mutation_extensions"][0]["typed_config"]["mutations"][0]
    mutation["remove_on_match"]["key_matcher"] = {"prefix": "x-user-", "ignore_case": True}


def _router_first(config: Config) -> None:
    filters = hcm(config)["http_filters"]
    filters.reverse()


def _ext_authz_removed(config: Config) -> None:
    hcm(config)["http_filters"] = hcm(config)["http_filters"][1:]


def _filter_disabled(config: Config) -> None:
    hcm(config)["http_filters"][0]["disabled"] = True


def _route_disabled(config: Config) -> None:
    per_route = routes(config)[0]["typed_per_filter_config"][envoy.EXT_AUTHZ]
    del per_route["check_settings"]
    per_route["disabled"] = True


def _route_disabled_by_filter_config(config: Config) -> None:
    routes(config)[0]["typed_per_filter_config"][envoy.EXT_AUTHZ] = {
        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
        "disabled": True,
    }


def _route_bound_over_http(config: Config) -> None:
    routes(config)[0]["typed_per_filter_config"] = {
        envoy.EXT_AUTHZ: {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
            "check_settings": {"context_extensions": {"policy": "bound"}},
        }
    }


def _upstream_everything(config: Config) -> None:
    _response(config)["allowed_upstream_headers"] = {"patterns": [{"prefix": ""}]}


def _dialect_headers_allowed(config: Config) -> None:
    ext_authz(config)["allowed_headers"] = {"patterns": [{"prefix": "x-"}]}


# (id, transport, one change to the generated config, the setting reported)
CASES: list[tuple[str, str, Callable[[Config], None], str]] = [
    ("fail-open", "grpc", _set(ext_authz, "failure_mode_allow", True), "failure_mode_allow"),
    ("no-status-on-error", "grpc", _drop(ext_authz, "status_on_error"), "status_on_error"),
    ("status-on-error-200", "grpc", _set(ext_authz, "status_on_error", {"code": "OK"}), "status_on_error"),
    ("timeout-below-key-wait", "grpc", _set(_grpc_service, "timeout", "0.250s"), "grpc_service.timeout"),
    ("timeout-envoy-default", "grpc", _drop(_grpc_service, "timeout"), "grpc_service.timeout"),
    ("http-timeout-short", "http", _set(_server_uri, "timeout", "0.3s"), "http_service.server_uri.timeout"),
    ("no-normalize-path", "grpc", _drop(hcm, "normalize_path"), "normalize_path"),
    ("normalize-path-false", "grpc", _set(hcm, "normalize_path", False), "normalize_path"),
    ("no-merge-slashes", "grpc", _drop(hcm, "merge_slashes"), "merge_slashes"),
    ("escaped-slashes-kept", "grpc", _set(hcm, "path_with_escaped_slashes_action", "KEEP_UNCHANGED"), "path_with_escaped_slashes_action"),
    ("escaped-slashes-default", "grpc", _drop(hcm, "path_with_escaped_slashes_action"), "path_with_escaped_slashes_action"),
    ("host-port-kept", "grpc", _drop(hcm, "strip_any_host_port"), "strip_any_host_port"),
    ("host-port-matching-only", "grpc", _strip_matching_port_only, "strip_any_host_port"),
    ("trailing-dot-kept", "grpc", _drop(hcm, "strip_trailing_host_dot"), "strip_trailing_host_dot"),
    ("identity-headers-kept", "grpc", _drop(hcm, "early_header_mutation_extensions"), "early_header_mutation_extensions"),
    ("identity-headers-other-prefix", "grpc", _other_prefix_removed, "early_header_mutation_extensions"),
    ("no-ext-authz", "grpc", _ext_authz_removed, envoy.EXT_AUTHZ),
    ("ext-authz-after-router", "grpc", _router_first, envoy.EXT_AUTHZ),
    ("ext-authz-disabled", "grpc", _filter_disabled, envoy.EXT_AUTHZ),
    ("route-unchecked", "grpc", _route_disabled, "ext_authz disabled"),
    ("route-unchecked-filter-config", "grpc", _route_disabled_by_filter_config, "ext_authz disabled"),
    ("http-no-path-prefix", "http", _drop(http_service, "path_prefix"), "http_service.path_prefix"),
    ("http-identity-not-upstream", "http", _drop(_response, "allowed_upstream_headers"), "http_service.authorization_response.allowed_upstream_headers"),
    ("http-upstream-everything", "http", _upstream_everything, "http_service.authorization_response.allowed_upstream_headers"),
    ("http-dialect-headers", "http", _dialect_headers_allowed, "allowed_headers"),
    ("http-route-binding-dropped", "http", _route_bound_over_http, "check_settings.context_extensions"),
]  # fmt: skip


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_the_generated_config_passes(transport: str) -> None:
    assert check.check(check.parse(_generated(transport))) == []


@pytest.mark.parametrize(
    ("mutate", "transport", "setting"),
    [c[2:0:-1] + c[3:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_each_unsafe_setting_is_reported(
    mutate: Callable[[Config], None], transport: str, setting: str
) -> None:
    config = _generated(transport)
    mutate(config)
    findings = check.check(check.parse(config))
    assert [f.setting for f in findings] == [setting], findings
    assert findings[0].where.startswith("listener ingress chain 0")


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_peer_certificates_are_required_when_policies_use_them(transport: str) -> None:
    expect = check.Expectations(peer_certificates=True)
    without = check.check(check.parse(_generated(transport)), expect)
    wanted = "include_peer_certificate" if transport == "grpc" else "forward_client_cert_details"
    assert [f.setting for f in without] == [wanted]
    forwarding = _generated(transport, peer_certificates=True)
    assert check.check(check.parse(forwarding), expect) == []


def test_the_key_wait_decides_the_smallest_timeout() -> None:
    config = _generated()  # 500 ms
    assert check.check(check.parse(config), check.Expectations(key_wait_ms=400)) == []
    findings = check.check(check.parse(config), check.Expectations(key_wait_ms=450))
    assert [f.setting for f in findings] == ["grpc_service.timeout"]
    assert "at least 550 ms" in findings[0].problem


def test_extra_identity_headers_must_be_stripped_too() -> None:
    expect = check.Expectations(identity_headers=("x-auth-subject", "x-user-id"))
    findings = check.check(check.parse(_generated()), expect)
    assert [f.setting for f in findings] == ["early_header_mutation_extensions"]
    assert "x-user-id" in findings[0].problem
    fixed = _generated(identity_headers=("x-user-id",))
    assert check.check(check.parse(fixed), expect) == []


def test_a_header_mutation_filter_before_ext_authz_also_strips() -> None:
    config = _generated()
    del hcm(config)["early_header_mutation_extensions"]
    hcm(config)["http_filters"].insert(
        0,
        {
            "name": "envoy.filters.http.header_mutation",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
                "mutations": {
                    "request_mutations": [
                        {"remove": "x-auth-subject"},
                        {
                            "remove_on_match": {
                                "key_matcher": {"safe_regex": {"regex": "x-auth-iss.*"}}
                            }
                        },
                    ]
                },
            },
        },
    )
    assert check.check(check.parse(config)) == []


def test_no_listener_is_a_finding() -> None:
    findings = check.check(check.parse({"admin": {}}))
    assert [f.setting for f in findings] == [envoy.EXT_AUTHZ]


# -- the command -----------------------------------------------------------------------------


def _write(tmp_path: Path, config: Config, name: str = "envoy.yaml") -> Path:
    path = tmp_path / name
    text = json.dumps(config) if name.endswith(".json") else yaml.safe_dump(config)
    path.write_text(text)
    return path


def test_command_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write(tmp_path, _generated(), "good.json")
    assert main(["--check", str(good)]) == 0
    assert "ok, every setting authz relies on is in place" in capsys.readouterr().out

    bad_config = _generated()
    ext_authz(bad_config)["failure_mode_allow"] = True
    hcm(bad_config)["merge_slashes"] = False
    bad = _write(tmp_path, bad_config, "bad.yaml")
    assert main(["--check", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "merge_slashes: not true" in out
    assert "failure_mode_allow: true: an authz outage" in out
    assert f"{bad}: 2 unsafe or missing setting(s)" in out


def test_command_refuses_what_envoy_would_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _generated()
    hcm(config)["normalise_path"] = True  # misspelt: Envoy refuses unknown fields
    assert main(["--check", str(_write(tmp_path, config))]) == 2
    assert "Unknown field 'normalise_path'" in capsys.readouterr().err
    missing = tmp_path / "missing.yaml"
    assert main(["--check", str(missing)]) == 2
    assert "cannot read" in capsys.readouterr().err
