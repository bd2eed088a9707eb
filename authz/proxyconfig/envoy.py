"""Envoy configuration for authz, built from envoy-data-plane's typed models.

Each message is a pydantic dataclass of Envoy's own API, so a misspelt field or a value of
the wrong type fails here, when the configuration is generated, not when Envoy starts.
:func:`bootstrap` is a complete static configuration (listener, ext_authz, clusters);
:func:`snippet` holds only what to merge into an existing one. Both become YAML through
:func:`to_data` and :mod:`authz.proxyconfig.render`, with the notes in :mod:`.envoy_notes`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import betterproto2
from envoy_data_plane.envoy.config.bootstrap import v3 as bootstrap_v3
from envoy_data_plane.envoy.config.cluster import v3 as cluster_v3
from envoy_data_plane.envoy.config.common.mutation_rules import v3 as mutation_v3
from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.envoy.config.endpoint import v3 as endpoint_v3
from envoy_data_plane.envoy.config.listener import v3 as listener_v3
from envoy_data_plane.envoy.config.overload import v3 as overload_v3
from envoy_data_plane.envoy.config.route import v3 as route_v3
from envoy_data_plane.envoy.extensions.filters.http.ext_authz import v3 as ext_authz_v3
from envoy_data_plane.envoy.extensions.filters.http.router import v3 as router_v3
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager import v3 as hcm_v3
from envoy_data_plane.envoy.extensions.http.early_header_mutation.header_mutation import (
    v3 as early_mutation_v3,
)
from envoy_data_plane.envoy.extensions.resource_monitors.downstream_connections import (
    v3 as connections_v3,
)
from envoy_data_plane.envoy.extensions.upstreams.http import v3 as upstream_http_v3
from envoy_data_plane.envoy.type import v3 as type_v3
from envoy_data_plane.envoy.type.matcher import v3 as matcher_v3
from envoy_data_plane.google.protobuf import Any as AnyMessage
from envoy_data_plane.message_pool import default_message_pool

from authz.proxyconfig.model import (
    DENIAL_CLIENT_HEADERS,
    ENVOY_CHECK_PATH,
    ENVOY_HTTP_REQUEST_HEADERS,
    LOGIN_CLIENT_HEADERS_ON_ALLOW,
    PROXY_SECRET_ENV,
    PROXY_SECRET_HEADER,
    Address,
    Deployment,
    ServiceAddress,
    TcpAddress,
    Transport,
    UnixAddress,
)

EXT_AUTHZ = "envoy.filters.http.ext_authz"
ROUTER = "envoy.filters.http.router"
HCM = "envoy.filters.network.http_connection_manager"
EARLY_HEADER_MUTATION = "envoy.http.early_header_mutation.header_mutation"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
MAX_CONNECTIONS_MONITOR = "envoy.resource_monitors.global_downstream_max_connections"
AUTHZ_CLUSTER = "authz"
UPSTREAM_CLUSTER = "upstream"
LISTENER = "ingress"
VIRTUAL_HOST = "default"

# Fields shown even at their default value: the reader must see that they are off.
_SHOWN_DEFAULTS: dict[str, dict[str, Any]] = {
    "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz": {
        "failure_mode_allow": False,
        "include_peer_certificate": False,
    },
}


def type_name(message: type[betterproto2.Message]) -> str:
    """``envoy.extensions...v3.ExtAuthz``: the message's full proto name (its ``@type``)."""
    return default_message_pool.type_to_url[message].removeprefix("type.googleapis.com/")


def _ms(ms: int) -> timedelta:
    return timedelta(milliseconds=ms)


def _typed(message: betterproto2.Message) -> AnyMessage:
    return AnyMessage.pack(message)


def _names(*names: str, prefix: str | None = None) -> matcher_v3.ListStringMatcher:
    patterns = [matcher_v3.StringMatcher(prefix=prefix, ignore_case=True)] if prefix else []
    patterns += [matcher_v3.StringMatcher(exact=name, ignore_case=True) for name in names]
    return matcher_v3.ListStringMatcher(patterns=patterns)


def socket_address(address: TcpAddress) -> core.Address:
    return core.Address(
        socket_address=core.SocketAddress(address=address.host, port_value=address.port)
    )


def _endpoint_address(address: Address) -> core.Address:
    if isinstance(address, UnixAddress):
        return core.Address(pipe=core.Pipe(path=address.path))
    if isinstance(address, ServiceAddress):
        return socket_address(TcpAddress(address.host, address.port))
    return socket_address(address)


def _discovery(address: Address) -> cluster_v3.ClusterDiscoveryType:
    if isinstance(address, TcpAddress) and not address.is_ip:
        return cluster_v3.ClusterDiscoveryType.STRICT_DNS
    if isinstance(address, ServiceAddress):
        return cluster_v3.ClusterDiscoveryType.STRICT_DNS
    return cluster_v3.ClusterDiscoveryType.STATIC


def status_code(code: int) -> type_v3.StatusCode:
    """Envoy's StatusCode enum member for an HTTP status (``503 -> ServiceUnavailable``)."""
    try:
        return type_v3.StatusCode(code)
    except ValueError:
        raise ValueError(f"Envoy has no StatusCode for {code}") from None


# -- the ext_authz filter --------------------------------------------------------------------


def _http_uri(d: Deployment) -> str:
    if isinstance(d.authz, UnixAddress):
        raise ValueError("the HTTP transport needs a TCP address")
    return f"http://{d.authz}"


def ext_authz(d: Deployment) -> ext_authz_v3.ExtAuthz:
    """The filter: fail closed, an explicit error status, a deadline above the key wait."""
    config = ext_authz_v3.ExtAuthz(
        transport_api_version=core.ApiVersion.V3,
        failure_mode_allow=False,
        status_on_error=type_v3.HttpStatus(code=status_code(d.status_on_error)),
        include_peer_certificate=d.peer_certificates and d.transport is Transport.GRPC,
    )
    if d.transport is Transport.GRPC:
        config.grpc_service = core.GrpcService(
            envoy_grpc=core.GrpcServiceEnvoyGrpc(cluster_name=AUTHZ_CLUSTER),
            timeout=_ms(d.timeout_ms),
        )
        return config
    config.http_service = ext_authz_v3.HttpService(
        server_uri=core.HttpUri(uri=_http_uri(d), cluster=AUTHZ_CLUSTER, timeout=_ms(d.timeout_ms)),
        path_prefix=ENVOY_CHECK_PATH,
        authorization_response=ext_authz_v3.AuthorizationResponse(
            allowed_upstream_headers=_names(*d.identity_headers, prefix=d.identity_header_prefix),
            allowed_client_headers=_names(*DENIAL_CLIENT_HEADERS),
        ),
    )
    response = config.http_service.authorization_response
    if d.browser_login and response is not None:
        response.allowed_client_headers_on_success = _names(*LOGIN_CLIENT_HEADERS_ON_ALLOW)
    if d.proxy_secret:
        secret = core.HeaderValue(
            key=PROXY_SECRET_HEADER, value=f"%ENVIRONMENT({PROXY_SECRET_ENV})%"
        )
        config.http_service.authorization_request = ext_authz_v3.AuthorizationRequest(
            headers_to_add=[secret]
        )
    extra = [*ENVOY_HTTP_REQUEST_HEADERS, *d.request_headers]
    if d.peer_certificates:
        extra.append("x-forwarded-client-cert")
    config.allowed_headers = _names(*extra)
    return config


def ext_authz_filter(d: Deployment) -> hcm_v3.HttpFilter:
    return hcm_v3.HttpFilter(name=EXT_AUTHZ, typed_config=_typed(ext_authz(d)))


def router_filter() -> hcm_v3.HttpFilter:
    return hcm_v3.HttpFilter(name=ROUTER, typed_config=_typed(router_v3.Router()))


def _identity_header_removal(d: Deployment) -> core.TypedExtensionConfig:
    """Client-sent identity headers are dropped before routing and before ext_authz."""
    matchers = [matcher_v3.StringMatcher(prefix=d.identity_header_prefix, ignore_case=True)]
    matchers += [
        matcher_v3.StringMatcher(exact=name, ignore_case=True)
        for name in d.identity_headers
        if not name.startswith(d.identity_header_prefix)
    ]
    mutations = [
        mutation_v3.HeaderMutation(
            remove_on_match=mutation_v3.HeaderMutationRemoveOnMatch(key_matcher=matcher)
        )
        for matcher in matchers
    ]
    return core.TypedExtensionConfig(
        name=EARLY_HEADER_MUTATION,
        typed_config=_typed(early_mutation_v3.HeaderMutation(mutations=mutations)),
    )


def policy_routes(d: Deployment, cluster: str | None) -> list[route_v3.Route]:
    """One route per binding, sending ``context_extensions: {policy: NAME}`` to authz
    (and ``authz.io/namespace: NS`` when the binding names the policy's namespace).
    ``cluster=None`` leaves the route action to the reader (the snippet)."""
    routes = []
    for binding in d.routes:
        per_route = ext_authz_v3.ExtAuthzPerRoute(
            check_settings=ext_authz_v3.CheckSettings(context_extensions=binding.context_extensions)
        )
        route = route_v3.Route(
            name=binding.name,
            match=route_v3.RouteMatch(prefix=binding.prefix),
            typed_per_filter_config={EXT_AUTHZ: _typed(per_route)},
        )
        if cluster is not None:
            route.route = route_v3.RouteAction(cluster=cluster)
        routes.append(route)
    return routes


def connection_manager(
    d: Deployment, routes: list[route_v3.Route] | None = None
) -> hcm_v3.HttpConnectionManager:
    """The HTTP connection manager settings authz's decisions rely on, with ext_authz first.
    Without ``routes`` (the snippet) it has no stat prefix or route table of its own."""
    manager = hcm_v3.HttpConnectionManager(
        normalize_path=True,
        merge_slashes=True,
        path_with_escaped_slashes_action=(
            hcm_v3.HttpConnectionManagerPathWithEscapedSlashesAction.UNESCAPE_AND_REDIRECT
        ),
        strip_any_host_port=True,
        strip_trailing_host_dot=True,
        early_header_mutation_extensions=[_identity_header_removal(d)],
        http_filters=[ext_authz_filter(d), router_filter()],
    )
    if d.peer_certificates and d.transport is Transport.HTTP:
        manager.forward_client_cert_details = (
            hcm_v3.HttpConnectionManagerForwardClientCertDetails.SANITIZE_SET
        )
        manager.set_current_client_cert_details = (
            hcm_v3.HttpConnectionManagerSetCurrentClientCertDetails(cert=True, uri=True)
        )
    if routes is not None:
        manager.stat_prefix = "ingress_http"
        manager.codec_type = hcm_v3.HttpConnectionManagerCodecType.AUTO
        manager.route_config = route_v3.RouteConfiguration(
            name="local_route",
            virtual_hosts=[route_v3.VirtualHost(name=VIRTUAL_HOST, domains=["*"], routes=routes)],
        )
    return manager


# -- clusters and the bootstrap --------------------------------------------------------------


def _cluster(name: str, address: Address, connect_timeout_ms: int) -> cluster_v3.Cluster:
    return cluster_v3.Cluster(
        name=name,
        type=_discovery(address),
        connect_timeout=_ms(connect_timeout_ms),
        load_assignment=endpoint_v3.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[
                endpoint_v3.LocalityLbEndpoints(
                    lb_endpoints=[
                        endpoint_v3.LbEndpoint(
                            endpoint=endpoint_v3.Endpoint(address=_endpoint_address(address))
                        )
                    ]
                )
            ],
        ),
    )


def authz_cluster(d: Deployment) -> cluster_v3.Cluster:
    cluster = _cluster(AUTHZ_CLUSTER, d.authz, d.connect_timeout_ms)
    if d.transport is Transport.GRPC:
        options = upstream_http_v3.HttpProtocolOptions(
            explicit_http_config=upstream_http_v3.HttpProtocolOptionsExplicitHttpConfig(
                http2_protocol_options=core.Http2ProtocolOptions()
            )
        )
        cluster.typed_extension_protocol_options = {HTTP_PROTOCOL_OPTIONS: _typed(options)}
    return cluster


def bootstrap(d: Deployment) -> bootstrap_v3.Bootstrap:
    """A complete static Envoy: one listener -> ext_authz -> router -> the upstream."""
    routes = policy_routes(d, UPSTREAM_CLUSTER)
    routes.append(
        route_v3.Route(
            name="default",
            match=route_v3.RouteMatch(prefix="/"),
            route=route_v3.RouteAction(cluster=UPSTREAM_CLUSTER),
        )
    )
    listener = listener_v3.Listener(
        name=LISTENER,
        address=socket_address(d.listen),
        filter_chains=[
            listener_v3.FilterChain(
                filters=[
                    listener_v3.Filter(name=HCM, typed_config=_typed(connection_manager(d, routes)))
                ]
            )
        ],
    )
    monitor = connections_v3.DownstreamConnectionsConfig(
        max_active_downstream_connections=d.max_connections
    )
    return bootstrap_v3.Bootstrap(
        admin=bootstrap_v3.Admin(address=socket_address(d.admin)),
        overload_manager=overload_v3.OverloadManager(
            resource_monitors=[
                overload_v3.ResourceMonitor(
                    name=MAX_CONNECTIONS_MONITOR, typed_config=_typed(monitor)
                )
            ]
        ),
        static_resources=bootstrap_v3.BootstrapStaticResources(
            listeners=[listener],
            clusters=[
                authz_cluster(d),
                _cluster(UPSTREAM_CLUSTER, d.upstream, d.connect_timeout_ms),
            ],
        ),
    )


def snippet(d: Deployment) -> dict[str, betterproto2.Message | list[Any]]:
    """What to merge into an existing Envoy: HCM settings and filters, bound routes, cluster."""
    return {
        "http_connection_manager": _typed(connection_manager(d)),
        "routes": policy_routes(d, None),
        "clusters": [authz_cluster(d)],
    }


# -- to plain data ---------------------------------------------------------------------------


def to_data(value: Any) -> Any:
    """Envoy's JSON mapping (snake_case), defaults that matter shown, scalars before blocks."""
    if isinstance(value, betterproto2.Message):
        return _arrange(value.to_dict(casing=betterproto2.Casing.SNAKE))
    if isinstance(value, dict):
        return {key: to_data(member) for key, member in value.items()}
    if isinstance(value, list):
        return [to_data(member) for member in value]
    return value


def _arrange(value: Any) -> Any:
    if isinstance(value, list):
        return [_arrange(member) for member in value]
    if not isinstance(value, dict):
        return value
    items = {key: _arrange(member) for key, member in value.items()}
    kind = items.get("@type")
    if isinstance(kind, str):
        for key, default in _SHOWN_DEFAULTS.get(kind.rpartition("/")[2], {}).items():
            items.setdefault(key, default)
    first = [k for k in items if k == "@type"]
    scalars = [k for k in items if k != "@type" and not isinstance(items[k], dict | list)]
    blocks = [k for k in items if isinstance(items[k], dict | list)]
    return {key: items[key] for key in (*first, *scalars, *blocks)}
