"""How each proxy asks authz's HTTP transport about a request, and how it reads the answer.

The check path names the dialect:

* `/check/envoy` + the original path: Envoy's `http_service` (Istio's `envoyExtAuthzHttp`).
  The check request *is* the original request: its method, its path after the prefix, its
  `Host`, and the headers Envoy was allowed to send. Allow = 200 with identity headers
  (Envoy copies those its `allowed_upstream_headers` match) and the names to drop in
  `x-envoy-auth-headers-to-remove`; deny = status, challenge and body for the client.
* `/check/nginx`: NGINX `auth_request`. The original request is described by
  `X-Original-Method`, `X-Original-URI`, `X-Original-Host` and `X-Forwarded-Proto`, set in
  the proxy's configuration. NGINX accepts only 2xx, 401 and 403 from an auth subrequest
  (anything else becomes its own 500), so a 400 is answered as 403, with the
  `invalid_request` challenge still in `WWW-Authenticate`.
* `/check/forward`: Caddy `forward_auth` and Traefik ForwardAuth, with `X-Forwarded-Method`,
  `-Uri`, `-Host` (its port dropped, as their host matchers drop it) and `-Proto`. Every
  answer is relayed to the client as it is.

Headers that describe the original request are trusted only because the proxy sets them
and nothing else can reach the check port; a request where one is missing, sent twice or
malformed is refused (400 `request_invalid`): a proxy that does not say exactly what it
routes must not have it judged. Identity headers and removals for NGINX and forward auth
go in `x-authz-remove`, which their shipped configurations act on.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from http import HTTPStatus

from authz.request.respond import Answer
from authz.request.view import KnownConnection, RequestError, RequestView, request_view

ENVOY_PREFIX = "/check/envoy"
NGINX_PATH = "/check/nginx"
FORWARD_PATH = "/check/forward"  # Caddy forward_auth, Traefik ForwardAuth
# With --http-proxy-secret-file, every check must carry the secret in this header.
PROXY_SECRET_HEADER = "x-authz-proxy-secret"  # noqa: S105 (a header name)
ENVOY_REMOVE_HEADER = "x-envoy-auth-headers-to-remove"  # Envoy's own, read on a 200
REMOVE_HEADER = "x-authz-remove"  # the same list for NGINX and forward auth

_METHOD = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,32}")
_PROTOS = frozenset(("http", "https"))


class Dialect(enum.Enum):
    ENVOY = "envoy"
    NGINX = "nginx"
    FORWARD = "forward"


@dataclass(frozen=True, slots=True)
class _Described:
    """The headers a dialect reads the original request from."""

    method: str
    uri: str
    host: str
    proto: str


_DESCRIBED = {
    Dialect.NGINX: _Described(
        "x-original-method", "x-original-uri", "x-original-host", "x-forwarded-proto"
    ),
    Dialect.FORWARD: _Described(
        "x-forwarded-method", "x-forwarded-uri", "x-forwarded-host", "x-forwarded-proto"
    ),
}


_ENVOY_PATH = ENVOY_PREFIX + "/"


def dialect_of(target: str) -> Dialect | None:
    """The dialect a check request's target names, or None (not a check path: 404)."""
    if target.startswith(_ENVOY_PATH):  # the usual case first: one test
        return Dialect.ENVOY
    if target.startswith(ENVOY_PREFIX):
        rest = target[len(ENVOY_PREFIX) :]
        return Dialect.ENVOY if rest[:1] in ("/", "*") else None
    path = target.partition("?")[0]
    if path == NGINX_PATH:
        return Dialect.NGINX
    if path == FORWARD_PATH:
        return Dialect.FORWARD
    return None


def original_request(
    dialect: Dialect,
    method: str,
    target: str,
    headers: Mapping[str, str],
    repeated: Collection[str],
) -> RequestView:
    """The request the proxy routes, as the dialect describes it; RequestError if it does
    not describe one exactly. `repeated`: header names the check request carried twice."""
    if dialect is Dialect.ENVOY:
        if "host" in repeated:
            raise RequestError("Host sent twice")
        host = headers.get("host")
        if not host:
            raise RequestError("Host missing")
        original = target[len(ENVOY_PREFIX) :]
        # Envoy's HCM sets x-forwarded-proto from the downstream connection (replacing a
        # client's unless a trusted hop sent it): the scheme, for DPoP's htu and redirects.
        proto = headers.get("x-forwarded-proto", "").lower()
        if proto in _PROTOS and "x-forwarded-proto" not in repeated:
            connection = KnownConnection(scheme=proto)
            return request_view(method, host, original, headers, {}, connection=connection)
        return request_view(method, host, original, headers, {})
    names = _DESCRIBED[dialect]
    fields = []
    for name in (names.method, names.uri, names.host, names.proto):
        value = headers.get(name)
        if not value:
            raise RequestError(f"{name} missing: the proxy must describe the original request")
        if name in repeated:
            raise RequestError(f"{name} sent twice")
        fields.append(value)
    original_method, uri, host, proto = fields
    if not _METHOD.fullmatch(original_method):
        raise RequestError(f"{names.method} is not an HTTP method")
    if proto.lower() not in _PROTOS:
        raise RequestError(f"{names.proto} must be http or https")
    if "," in host or "," in proto:
        raise RequestError(f"{names.host} or {names.proto} lists several proxies' values")
    if dialect is Dialect.FORWARD:
        host = _without_port(host)
    connection = KnownConnection(scheme=proto.lower())
    return request_view(original_method, host, uri, headers, {}, connection=connection)


def _without_port(host: str) -> str:
    """Caddy's and Traefik's host matchers compare the host without its port (NGINX's $host
    has none): authz decides on the host as their routers see it."""
    if host.startswith("["):  # [v6]:port
        return host[: host.find("]") + 1]
    name, colon, port = host.rpartition(":")
    return name if colon and port.isdigit() and ":" not in name else host


# -- answers ---------------------------------------------------------------------------------


def unsupported(
    answer: Answer, dialect: Dialect, identity_headers: Collection[str] | None
) -> str | None:
    """Why this proxy cannot carry out the allow answer, or None (then it is carried out).

    No HTTP check answer can remove a query parameter (Envoy's http_service has no way to
    say so), and Envoy passes upstream only the answer headers `allowed_upstream_headers`
    names (identity headers), so not a rewritten Cookie. The shipped NGINX and forward-auth
    configurations set or clear the identity headers and drop `Authorization`, nothing else:
    a Cookie to rewrite or another header to remove (a token source authz stripped or did
    not verify) cannot reach them. Allowing anyway would hand the upstream what the policy
    says it never sees (`stripAuthorization`). `identity_headers`: the policy's, or None
    when no policy decided (then only identity headers are removed).
    """
    if answer.remove_query:
        return "HTTP checks cannot remove a token sent in the query string (stripAuthorization)"
    if dialect is Dialect.ENVOY:
        if any(name == "cookie" for name, _ in answer.headers):
            return "Envoy's http_service does not pass a rewritten Cookie header upstream"
        return None
    if identity_headers is None:
        return None
    handled = {*identity_headers, "authorization"}
    others = sorted(
        {n for n in answer.remove if n not in handled}
        | {n for n, _ in answer.headers if n not in handled}
    )
    if others:
        return f"the {dialect.value} configuration cannot change {', '.join(others)} upstream"
    return None


_CLOSE = b"connection: close\r\n"


@dataclass(frozen=True, slots=True)
class Rendered:
    """One HTTP/1.1 response: `data` whole, `head` its length up to the body."""

    data: bytes
    head: int
    status: int

    def wire(self, *, head_only: bool = False, close: bool = False) -> bytes:
        """The bytes to send: without the body for a HEAD check; telling the proxy the
        connection closes when it asked for that (or it must close)."""
        data, head = self.data, self.head
        if close:
            at = head - 2  # before the blank line that ends the header block
            data = data[:at] + _CLOSE + data[at:]
            head += len(_CLOSE)
        return data[:head] if head_only else data


def _status_line(status: int) -> bytes:
    # A policy's denyWith may choose any 3xx-5xx status; the reason phrase may be empty.
    phrase = HTTPStatus(status).phrase if status in _KNOWN_STATUSES else ""
    return f"HTTP/1.1 {status} {phrase}\r\n".encode()


_KNOWN_STATUSES = frozenset(s.value for s in HTTPStatus)


def _header(name: str, value: str) -> bytes:
    return f"{name}: {value}\r\n".encode()


def plain(status: int) -> Rendered:
    """A response that is not a Check's answer (unknown path, broken framing)."""
    head = _status_line(status) + b"content-length: 0\r\n\r\n"
    return Rendered(head, len(head), status)


def render(answer: Answer, dialect: Dialect) -> Rendered:
    """The Answer as this dialect's proxy reads it."""
    status = answer.status
    if dialect is Dialect.NGINX and not answer.allowed and status not in (401, 403, 503):
        # NGINX takes only 2xx/401/403 from auth_request (anything else is its 500): a
        # redirect (sign-in, denyWith) it cannot relay is a 401; a 400, or a denyWith
        # status such as 404, is a 403. A 503 (overloaded) stays the error it is.
        status = 401 if status < 400 else 403
    parts = [_status_line(status)]
    if answer.allowed:
        parts.extend(_header(name, value) for name, value in answer.headers)
        # A renewed session cookie for the client: Envoy passes it on with
        # allowed_client_headers_on_success (proxy-config --browser-login); forward auth
        # and NGINX do not (sessions through them belong in Redis: the cookie never changes).
        parts.extend(_header(name, value) for name, value in answer.response_headers)
        if answer.remove:
            name = ENVOY_REMOVE_HEADER if dialect is Dialect.ENVOY else REMOVE_HEADER
            parts.append(_header(name, ",".join(answer.remove)))
        parts.append(b"content-length: 0\r\n\r\n")
        head = b"".join(parts)
        return Rendered(head, len(head), status)
    body = answer.body.encode()
    parts.extend(_header(name, value) for name, value in answer.headers)
    parts.append(f"content-length: {len(body)}\r\n\r\n".encode())
    head = b"".join(parts)
    return Rendered(head + body, len(head), status)
