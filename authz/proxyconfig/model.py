"""What a deployment tells `authz proxy-config`, and the limits authz's security model sets.

Plain dataclasses, no proxy types: the Envoy, Istio, NGINX and Caddy writers and ``--check``
all read the same inputs and the same constants, so the generated files and the checker
cannot drift apart on, say, the smallest safe timeout.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass

from authz.policy.schema import FETCH_DEFAULTS, NAMESPACE_CONTEXT_KEY
from authz.transport import dialects


class Transport(enum.StrEnum):
    GRPC = "grpc"  # envoy.service.auth.v3.Authorization/Check (authz serve --grpc-addr)
    HTTP = "http"  # HTTP checks (authz serve --http-check-addr, issue 14)


GRPC_PORT = 9001  # `authz serve --grpc-addr` default
HTTP_CHECK_PORT = 9003  # `authz serve --http-check-addr` default
# HTTP check paths, one per proxy dialect (authz/transport/dialects.py). Envoy appends the
# original path to its prefix.
ENVOY_CHECK_PATH = dialects.ENVOY_PREFIX
NGINX_CHECK_PATH = dialects.NGINX_PATH
FORWARD_CHECK_PATH = dialects.FORWARD_PATH  # Caddy forward_auth, Traefik ForwardAuth
# What authz answers besides identity headers: the shared secret it wants from the proxy
# (--http-proxy-secret-file), and what must not reach the upstream (NGINX, forward auth).
PROXY_SECRET_HEADER = dialects.PROXY_SECRET_HEADER
REMOVE_HEADER = dialects.REMOVE_HEADER
# The environment variable Envoy and Caddy read the shared secret from.
PROXY_SECRET_ENV = "AUTHZ_PROXY_SECRET"  # noqa: S105 (a variable name)

# A token with an unknown `kid` may wait this long for one JWKS refetch (issuer
# `fetch.unknownKidWaitMillis`); the proxy's deadline for one check must be longer, or a
# request right after a key rotation times out at the proxy instead of being verified.
KEY_WAIT_DEFAULT_MS: int = FETCH_DEFAULTS["unknownKidWaitMillis"]
KEY_WAIT_MAX_MS = 5000  # the schema's maximum for unknownKidWaitMillis
# After the key arrives: one signature verification plus queueing under load.
TIMEOUT_HEADROOM_MS = 100

# Headers authz sets on allowed requests (policies may add more under the same prefix).
IDENTITY_HEADER_PREFIX = "x-auth-"
CONTRACT_IDENTITY_HEADERS = ("x-auth-subject", "x-auth-issuer")
# Headers the nginx and forward-auth dialects read as "the original request": a client must
# never be able to send them to authz through Envoy.
# What Envoy's HTTP ext_authz sends authz besides Host, Method, Path, Content-Length and
# Authorization: a DPoP proof, the scheme (Envoy's HCM sets x-forwarded-proto from the connection,
# replacing a client's, unless xff_num_trusted_hops trusts the hop before it; DPoP's htu
# and redirects need it), and the ids that tie the audit line to the access log and trace.
ENVOY_HTTP_REQUEST_HEADERS = (
    "dpop",  # a DPoP-bound token's proof (RFC 9449)
    "x-forwarded-proto",
    "x-request-id",
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
)
DIALECT_REQUEST_HEADERS = (
    "x-original-method",
    "x-original-uri",
    "x-original-host",
    "x-forwarded-method",
    "x-forwarded-uri",
    "x-forwarded-host",
)
# What an HTTP denial from authz carries to the client besides status and body: the
# challenge, the body's type, and browser sign-in's cookies, caching and retry advice (a
# policy's `login`; Envoy adds Location itself).
DENIAL_CLIENT_HEADERS = (
    "www-authenticate",
    "content-type",
    "set-cookie",
    "cache-control",
    "retry-after",
)
# Browser sign-in (`--browser-login`) over HTTP checks: the client headers authz reads (the
# session cookie, whether a person is looking, where a state-changing request came from)
# and what an allow may send the client (a renewed session cookie).
LOGIN_CHECK_HEADERS = (
    "cookie",
    "accept",
    "sec-fetch-mode",
    "sec-fetch-dest",
    "x-requested-with",
    "origin",
    "referer",
    "x-forwarded-proto",
)
LOGIN_CLIENT_HEADERS_ON_ALLOW = ("set-cookie",)

_HEADER_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
POLICY_KEY = "policy"  # context_extensions key; AuthzPolicy spec.targets.contextExtensions
_SERVICE_HOST = re.compile(
    r"(?P<name>[a-z0-9]([-a-z0-9]*[a-z0-9])?)\.(?P<namespace>[a-z0-9]([-a-z0-9]*[a-z0-9])?)"
    r"\.svc(\.(?P<domain>[a-z0-9.-]+))?"
)


@dataclass(frozen=True)
class TcpAddress:
    host: str
    port: int

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class UnixAddress:
    path: str

    def __str__(self) -> str:
        return f"unix:{self.path}"


@dataclass(frozen=True)
class ServiceAddress:
    """A Kubernetes Service, reached by its cluster DNS name."""

    name: str
    namespace: str
    port: int
    domain: str = "cluster.local"

    @property
    def host(self) -> str:
        return f"{self.name}.{self.namespace}.svc.{self.domain}"

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


Address = TcpAddress | UnixAddress | ServiceAddress


def parse_address(text: str, default_port: int) -> Address:
    """``HOST[:PORT]``, ``[V6]:PORT``, ``unix:/abs/path`` or ``NAME.NAMESPACE.svc[.DOMAIN][:PORT]``."""
    if text.startswith("unix:"):
        path = text.removeprefix("unix:")
        path = "/" + path.lstrip("/") if path.startswith("//") else path  # unix:///abs
        if not path.startswith("/"):
            raise ValueError(f"unix socket path must be absolute: {text!r}")
        return UnixAddress(path)
    host, port = _split_host_port(text, default_port)
    service = _SERVICE_HOST.fullmatch(host)
    if service is not None:
        domain = service["domain"] or "cluster.local"
        return ServiceAddress(service["name"], service["namespace"], port, domain)
    return TcpAddress(host, port)


def parse_tcp(text: str, default_port: int) -> TcpAddress:
    host, port = _split_host_port(text, default_port)
    return TcpAddress(host, port)


def _split_host_port(text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":") if sep else ""
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad address {text!r}")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"address {text!r} has no host")
    if port_text and not port_text.isdigit():
        raise ValueError(f"address {text!r}: port must be a number")
    port = int(port_text) if port_text else default_port
    if not 0 < port < 65536:
        raise ValueError(f"address {text!r}: port out of range")
    return host.lower(), port


@dataclass(frozen=True)
class RouteBinding:
    """Requests whose path starts with ``prefix`` carry ``context_extensions: {policy: ...}``,
    which selects the AuthzPolicy with ``spec.targets.contextExtensions: {policy: ...}``.
    With a ``namespace`` they also carry ``authz.io/namespace: <namespace>``: in cluster
    mode an AuthzPolicy's binding matches only routes naming its own namespace."""

    prefix: str
    policy: str
    namespace: str | None = None

    def __post_init__(self) -> None:
        if not self.prefix.startswith("/"):
            raise ValueError(f"route prefix must start with '/': {self.prefix!r}")
        if not self.policy:
            raise ValueError(f"route {self.prefix!r}: empty policy name")
        if self.namespace is not None and not _NAMESPACE.fullmatch(self.namespace):
            raise ValueError(f"route {self.prefix!r}: {self.namespace!r} is not a namespace name")

    @property
    def name(self) -> str:
        """The Envoy route name."""
        scope = f"{self.namespace}-" if self.namespace else ""
        return f"policy-{scope}{self.policy}"

    @property
    def context_extensions(self) -> dict[str, str]:
        extensions = {POLICY_KEY: self.policy}
        if self.namespace is not None:
            extensions[NAMESPACE_CONTEXT_KEY] = self.namespace
        return extensions


def minimum_timeout_ms(key_wait_ms: int) -> int:
    """The shortest check deadline that still lets a token with a new key be verified."""
    return key_wait_ms + TIMEOUT_HEADROOM_MS


@dataclass(frozen=True)
class Deployment:
    """Inputs shared by every output. Defaults are the shipped example's."""

    transport: Transport = Transport.GRPC
    authz: Address = TcpAddress("127.0.0.1", GRPC_PORT)
    timeout_ms: int = 500
    connect_timeout_ms: int = 250
    key_wait_ms: int = KEY_WAIT_DEFAULT_MS
    status_on_error: int = 503
    routes: tuple[RouteBinding, ...] = ()
    peer_certificates: bool = False
    identity_header_prefix: str = IDENTITY_HEADER_PREFIX
    identity_headers: tuple[str, ...] = ()  # exact names outside the prefix
    check_headers: tuple[str, ...] = ()  # client headers the HTTP check needs beyond the defaults
    proxy_secret: bool = (
        False  # HTTP: send the shared secret authz's --http-proxy-secret-file holds
    )
    browser_login: bool = False  # HTTP: the headers a policy's `login` needs, both ways
    # The proxy's own side, for complete configurations.
    listen: TcpAddress = TcpAddress("127.0.0.1", 8080)
    upstream: TcpAddress = TcpAddress("127.0.0.1", 8081)
    admin: TcpAddress = TcpAddress("127.0.0.1", 9901)
    max_connections: int = 10000

    @property
    def request_headers(self) -> tuple[str, ...]:
        """The client headers an HTTP check sends beyond the proxy's defaults."""
        extra = [*self.check_headers, *(LOGIN_CHECK_HEADERS if self.browser_login else ())]
        return tuple(dict.fromkeys(extra))

    def __post_init__(self) -> None:
        if not 0 <= self.key_wait_ms <= KEY_WAIT_MAX_MS:
            raise ValueError(f"key wait must be 0..{KEY_WAIT_MAX_MS} ms (unknownKidWaitMillis)")
        if self.timeout_ms < minimum_timeout_ms(self.key_wait_ms):
            raise ValueError(
                f"timeout {self.timeout_ms} ms is too short: authz may wait {self.key_wait_ms} ms "
                f"for a new signing key (unknownKidWaitMillis), so the proxy must wait at least "
                f"{minimum_timeout_ms(self.key_wait_ms)} ms"
            )
        if self.connect_timeout_ms <= 0:
            raise ValueError("connect timeout must be positive")
        if not 400 <= self.status_on_error <= 599:
            raise ValueError(
                "status on error must be a 4xx or 5xx code: an outage is never a success"
            )
        for name in (self.identity_header_prefix, *self.identity_headers, *self.check_headers):
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"header name {name!r}: lowercase letters, digits and '-' only")
        if isinstance(self.authz, UnixAddress) and self.transport is Transport.HTTP:
            raise ValueError("the HTTP transport listens on TCP (--http-check-addr)")
        if self.routes and self.transport is Transport.HTTP:
            raise ValueError(
                "route bindings travel as context_extensions, which Envoy sends to gRPC checks "
                "only (http_service drops them): with --transport http, select policies by host"
            )
        if self.proxy_secret and self.transport is not Transport.HTTP:
            raise ValueError("a proxy secret is for the HTTP transport (--transport http)")

    @property
    def identity_names(self) -> tuple[str, ...]:
        """The contract's identity headers plus the configured extra names."""
        return tuple(dict.fromkeys((*CONTRACT_IDENTITY_HEADERS, *self.identity_headers)))
