"""The neutral request view: the HTTP request the proxy routes, as every transport describes it.

A transport (gRPC ext_authz today) turns its wire input into a `RequestView` with
`request_view()`. authz must decide on exactly the request the proxy routes: the host as
Envoy's virtual-host matching sees it (case-insensitive; a port or a trailing dot stays,
because a router that keeps them routes on them: the shipped proxy configurations strip
both before ext_authz runs), and the path as Envoy normalises it (`authz.request.paths`).
Header limits bound what any caller can make a Check walk through.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from authz.policy.conditions import Peer
from authz.request.paths import ENCODED_SLASH, normalize_path
from authz.request.records import record

MAX_PATH = 8192
# Request header limits. Envoy's own defaults are 100 client headers and 60 KiB in all; the
# count leaves room for the pseudo-headers and the ones Envoy adds (x-request-id, ...), so a
# request Envoy accepted is never refused here. They bound what a direct gRPC caller, or an
# Envoy configured far above its defaults, can make every Check walk through. One header
# may be twice the default token limit, so a long token meets `token_too_large` (401) first.
MAX_HEADERS = 128
MAX_HEADER_BYTES = 32 * 1024  # one header, name and value
MAX_HEADERS_TOTAL = 64 * 1024


class RequestError(ValueError):
    """The input cannot describe an HTTP request we can judge (400 request_invalid)."""


class Connection(Peer, Protocol):
    """What the proxy knows of the connection the request came on ("" or 0: not known),
    read by the transport only when a rule or credential asks. `peer_principal` is the mTLS
    client's identity as Envoy reports it (a SPIFFE URI SAN, or the certificate subject);
    `peer_certificate` is the client certificate as URL-encoded PEM, sent only when the
    proxy is told to (`include_peer_certificate`). What rule conditions read of it is
    `Peer` (policy.conditions); a credential also reads the scheme and source port."""

    @property
    def scheme(self) -> str: ...
    @property
    def source_port(self) -> int: ...


@dataclass(frozen=True, slots=True)
class KnownConnection:
    """A Connection given as values (the CLI, tests, transports that read it eagerly)."""

    scheme: str = ""
    source_address: str = ""
    source_port: int = 0
    destination_port: int = 0
    peer_principal: str = ""
    peer_certificate: str = ""


NO_CONNECTION: Connection = KnownConnection()


@record
class RequestView:
    method: str
    host: str  # lower case; a port or trailing dot as sent (the router would see them)
    path: str  # normalised as Envoy does, without query
    raw_path: str  # as received, with query
    headers: Mapping[str, str]  # lower-case names; the transport's own map, not copied
    context: Mapping[str, str]  # Envoy context extensions (per-route policy bindings)
    connection: Connection = NO_CONNECTION


def request_view(
    method: str,
    authority: str,
    raw_path: str,
    headers: Mapping[str, str],
    context: Mapping[str, str],
    *,
    connection: Connection = NO_CONNECTION,
) -> RequestView:
    """Normalise what a transport read; raises RequestError for a path we cannot judge:
    missing, relative, too long, with a fragment (Envoy refuses those), or with an encoded
    `/` or `\\` the proxy left encoded (a later hop may decode it into another path)."""
    if not raw_path or len(raw_path) > MAX_PATH or raw_path[0] != "/":
        if raw_path == "*" and method == "OPTIONS":
            raw_path = "/"
        else:
            raise RequestError("request path missing, not absolute or too long")
    query_at = raw_path.find("?")
    path = raw_path if query_at < 0 else raw_path[:query_at]
    if "#" in path:
        raise RequestError("request path carries a fragment")
    path = normalize_path(path)
    if "%" in path and ENCODED_SLASH.search(path):
        raise RequestError(
            "request path has an encoded '/' or '\\' (the proxy should decode and redirect: "
            "path_with_escaped_slashes_action UNESCAPE_AND_REDIRECT)"
        )
    # positional: keyword arguments cost a Check measurably more here
    return RequestView(
        method.upper(), authority.lower(), path, raw_path, headers, context, connection
    )


def check_header_limits(count: int, pairs: Iterable[tuple[str, str | bytes]]) -> None:
    """Refuse oversized header sets before anything reads them; raises RequestError."""
    if count > MAX_HEADERS:
        raise RequestError(f"request has {count} headers, over {MAX_HEADERS}")
    total = 0
    for key, value in pairs:
        length = len(key) + len(value)
        if length > MAX_HEADER_BYTES:
            raise RequestError(f"header {key[:64]!r} is {length} bytes, over {MAX_HEADER_BYTES}")
        total += length
    if total > MAX_HEADERS_TOTAL:
        raise RequestError(f"request headers are {total} bytes, over {MAX_HEADERS_TOTAL}")
