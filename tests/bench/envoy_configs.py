"""Envoy bootstraps for the benchmark, all derived from tests.support.envoy.envoy_bootstrap.

Every variant answers with an Envoy `direct_response` instead of proxying to an upstream,
so no upstream process competes for the two cores and the only work measured is Envoy's
and the authorizer's. Starting from `envoy_bootstrap` keeps the listener identical to the
tested production shape (path normalisation, x-auth-* stripping, fail-closed ext_authz).
"""

from __future__ import annotations

from typing import Any

from authz.proxyconfig.envoy import HTTP_PROTOCOL_OPTIONS as HTTP_PROTOCOL_OPTIONS_KEY
from tests.support.envoy import EXT_AUTHZ_FILTER, envoy_bootstrap

UNUSED_PORT = 1  # the `upstream` cluster exists but no route uses it
EXT_AUTHZ_TIMEOUT_MS = 1000  # generous: at saturation we want to see queueing, not 503s
#: Envoy's http_service prepends this to the original path of each authorization request.
HTTP_CHECK_PREFIX = "/ext_authz"


def _hcm(bootstrap: dict[str, Any]) -> dict[str, Any]:
    listener = bootstrap["static_resources"]["listeners"][0]
    hcm: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm


def _direct_response(bootstrap: dict[str, Any]) -> dict[str, Any]:
    for host in _hcm(bootstrap)["route_config"]["virtual_hosts"]:
        for route in host["routes"]:
            route.pop("route", None)
            route["direct_response"] = {"status": 200, "body": {"inline_string": "ok\n"}}
    return bootstrap


def _without_ext_authz(bootstrap: dict[str, Any]) -> dict[str, Any]:
    hcm = _hcm(bootstrap)
    hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != EXT_AUTHZ_FILTER]
    return bootstrap


def plain(listen_port: int, admin_port: int) -> dict[str, Any]:
    """Envoy without auth: the listener and a direct response, nothing else."""
    bootstrap = envoy_bootstrap(
        listen_port=listen_port,
        admin_port=admin_port,
        authz_grpc=f"127.0.0.1:{UNUSED_PORT}",
        upstream_port=UNUSED_PORT,
        policy_routes={},
    )
    return _direct_response(_without_ext_authz(bootstrap))


def ext_authz(listen_port: int, admin_port: int, authz_grpc: str) -> dict[str, Any]:
    """Envoy -> ext_authz (gRPC, one HTTP/2 connection per Envoy worker) -> direct response."""
    bootstrap = envoy_bootstrap(
        listen_port=listen_port,
        admin_port=admin_port,
        authz_grpc=authz_grpc,
        upstream_port=UNUSED_PORT,
        timeout_ms=EXT_AUTHZ_TIMEOUT_MS,
        policy_routes={},
    )
    return _direct_response(bootstrap)


def authz_http(listen_port: int, admin_port: int, authz_check: str) -> dict[str, Any]:
    """Envoy -> authz's HTTP checks (`http_service` at /check/envoy, HTTP/1.1 keep-alive)
    -> direct response: `authz proxy-config envoy --transport http`, as shipped."""
    bootstrap = envoy_bootstrap(
        listen_port=listen_port,
        admin_port=admin_port,
        authz_grpc=authz_check,
        transport="http",
        upstream_port=UNUSED_PORT,
        timeout_ms=EXT_AUTHZ_TIMEOUT_MS,
        policy_routes={},
    )
    return _direct_response(bootstrap)


def jwt_authn(
    listen_port: int, admin_port: int, *, issuer: str, audience: str, jwks_json: str
) -> dict[str, Any]:
    """The native anchor: Envoy's jwt_authn with a local JWKS and its verified-JWT cache,
    checking signature, iss, aud and exp (no scopes: jwt_authn has no rule language)."""
    config = {
        "providers": {
            "bench": {
                "issuer": issuer,
                "audiences": [audience],
                "local_jwks": {"inline_string": jwks_json},
                "forward": True,
                "jwt_cache_config": {"jwt_cache_size": 1000},
            }
        },
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
    }
    bootstrap = envoy_bootstrap(
        listen_port=listen_port,
        admin_port=admin_port,
        authz_grpc=f"127.0.0.1:{UNUSED_PORT}",
        upstream_port=UNUSED_PORT,
        policy_routes={},
        with_jwt_authn=config,
    )
    return _direct_response(_without_ext_authz(bootstrap))


def _ext_authz_config(bootstrap: dict[str, Any]) -> dict[str, Any]:
    for f in _hcm(bootstrap)["http_filters"]:
        if f["name"] == EXT_AUTHZ_FILTER:
            config: dict[str, Any] = f["typed_config"]
            return config
    raise KeyError(EXT_AUTHZ_FILTER)


def _cluster(bootstrap: dict[str, Any], name: str) -> dict[str, Any]:
    clusters: list[dict[str, Any]] = bootstrap["static_resources"]["clusters"]
    return next(c for c in clusters if c["name"] == name)


def ext_authz_http(
    listen_port: int,
    admin_port: int,
    authz_http: str,
    *,
    http2: bool = False,
    max_connections: int | None = None,
) -> dict[str, Any]:
    """Envoy -> HTTP ext_authz (`http_service`) -> direct response.

    The same listener and filter as `ext_authz`, with `http_service` in place of
    `grpc_service`: Envoy sends the original method and `HTTP_CHECK_PREFIX` + path with
    the `authorization` header and no body, allows on a 2xx and passes `x-auth-*` answer
    headers upstream. The `authz` cluster speaks HTTP/1.1 (keep-alive; one request per
    connection at a time, so Envoy opens as many as there are concurrent checks, up to
    `max_connections`, queueing the rest) or, with `http2`, h2c with every check a stream
    on one connection per Envoy worker.
    """
    bootstrap = ext_authz(listen_port, admin_port, authz_http)
    config = _ext_authz_config(bootstrap)
    timeout = config.pop("grpc_service")["timeout"]
    config.pop("transport_api_version")  # gRPC only
    config["http_service"] = {
        "server_uri": {"uri": f"http://{authz_http}", "cluster": "authz", "timeout": timeout},
        "path_prefix": HTTP_CHECK_PREFIX,
        "authorization_response": {
            "allowed_upstream_headers": {"patterns": [{"prefix": "x-auth-", "ignore_case": True}]}
        },
    }
    config["allowed_headers"] = {"patterns": [{"exact": "authorization", "ignore_case": True}]}
    cluster = _cluster(bootstrap, "authz")
    options = cluster["typed_extension_protocol_options"][HTTP_PROTOCOL_OPTIONS_KEY]
    if not http2:
        options["explicit_http_config"] = {"http_protocol_options": {}}
    if max_connections is not None:
        cluster["circuit_breakers"] = {"thresholds": [{"max_connections": max_connections}]}
    return bootstrap
