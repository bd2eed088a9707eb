"""One HTTP exchange with an issuer, with the limits a background fetcher needs.

A GET of a key document (the key manager's refresh threads) or a form POST (token
introspection, on its own bounded pool); the Check path never does I/O.
A whole fetch (connect, headers, body) is bounded by one deadline, the body by
`MAX_BYTES` (or less), redirects are not followed (a moved JWKS is a configuration
change, not something to chase; a redirected POST could carry a token elsewhere), and
TLS is verified against the system CAs or the configured bundle. Every failure is a
FetchError with a stable `result` code.
With `public_only`, the address a host name resolves to is checked when connecting (so
a name that resolves differently later cannot slip past): loopback, link-local (the
cloud metadata service 169.254.169.254 included) and unspecified addresses are refused.
`HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` are honoured (authz.keys.proxy): an https URL goes
through the proxy's CONNECT tunnel, TLS still verified end to end against the key server.
Through a proxy, a public-only fetch resolves and checks the name here and has the proxy
connect to that address, so the proxy cannot be used to reach what a direct fetch may not.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import re
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from authz.keys.proxy import Proxy, ProxyConfigError, proxy_for

MAX_BYTES = 1 << 20
_CHUNK = 64 * 1024
# The kube-apiserver serves its JWKS only as application/jwk-set+json (406 for plain JSON).
_HEADERS = {"Accept": "application/json, application/jwk-set+json, */*", "User-Agent": "authz"}
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)\"?", re.IGNORECASE)


class FetchResult(StrEnum):
    """How one refresh ended: the `result` label of the fetch metric and the state's last error."""

    OK = "ok"
    TIMEOUT = "timeout"
    CONNECT_ERROR = "connect_error"
    TLS_ERROR = "tls_error"
    HTTP_STATUS = "http_status"
    REDIRECT = "redirect"
    TOO_LARGE = "too_large"
    INVALID = "invalid"
    ISSUER_MISMATCH = "issuer_mismatch"


class FetchError(Exception):
    """A key document could not be fetched or used; `result` says which way it failed."""

    def __init__(self, result: FetchResult, message: str) -> None:
        super().__init__(message)
        self.result = result
        self.message = message


@dataclass(frozen=True, slots=True)
class Fetched:
    """A JSON document and the server's `Cache-Control: max-age`, if it sent one."""

    document: Any
    max_age: int | None


def tls_context(ca_pem: str | None) -> ssl.SSLContext:
    """Verifying context: the configured CA bundle if given (only it), else the system CAs."""
    return ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()


def _local(address: str) -> str | None:
    """What makes an address one a public-only fetch must not reach, or None."""
    ip = ipaddress.ip_address(address.partition("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_unspecified or ip in _THIS_NETWORK:
        return "unspecified"
    return None


_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # "this host on this network" (RFC 1122)


def _public_connection(
    address: tuple[str, int], timeout: float | None = None, source_address: Any = None, **_: Any
) -> socket.socket:
    """socket.create_connection for public addresses only: resolve, refuse local addresses,
    connect to the first address that is allowed and answers."""
    host, port = address
    refused: list[str] = []
    error: OSError | None = None
    for family, kind, proto, _name, sockaddr in socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM
    ):
        why = _local(str(sockaddr[0]))
        if why is not None:
            refused.append(f"{sockaddr[0]} ({why})")
            continue
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    if error is not None:
        raise error
    raise FetchError(
        FetchResult.CONNECT_ERROR,
        f"{host} resolves only to addresses this issuer may not fetch from: {', '.join(refused)}",
    )


def get_json(
    url: str,
    *,
    timeout: float,
    tls: ssl.SSLContext,
    allow_http: bool,
    max_bytes: int = MAX_BYTES,
    public_only: bool = False,
) -> Fetched:
    """GET `url` and parse its body as JSON; raises FetchError. `public_only`: refuse to
    connect to loopback, link-local and unspecified addresses."""
    return _exchange(
        "GET", url, None, _HEADERS, timeout=timeout, tls=tls, allow_http=allow_http,
        max_bytes=max_bytes, public_only=public_only,
    )  # fmt: skip


def post_form(
    url: str,
    form: Mapping[str, str],
    *,
    headers: Mapping[str, str],
    timeout: float,
    tls: ssl.SSLContext,
    allow_http: bool,
    max_bytes: int = MAX_BYTES,
    decode: Callable[[bytes], Any] = json.loads,
    public_only: bool = False,
) -> Fetched:
    """POST `form` (application/x-www-form-urlencoded) to `url` with `headers` and parse
    the answer with `decode` (a ValueError from it is an INVALID result); raises
    FetchError. Messages name the URL, never the form or headers (they carry credentials)."""
    body = urllib.parse.urlencode(form).encode("ascii")
    sent = {
        "Accept": "application/json",
        "Content-Type": "application/x-www-form-urlencoded",
        "User-Agent": "authz",
        **headers,
    }
    return _exchange(
        "POST", url, body, sent, timeout=timeout, tls=tls, allow_http=allow_http,
        max_bytes=max_bytes, decode=decode, public_only=public_only,
    )  # fmt: skip


def _exchange(
    method: str,
    url: str,
    body: bytes | None,
    headers: Mapping[str, str],
    *,
    timeout: float,
    tls: ssl.SSLContext,
    allow_http: bool,
    max_bytes: int,
    decode: Callable[[bytes], Any] = json.loads,
    public_only: bool = False,
) -> Fetched:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise FetchError(FetchResult.INVALID, f"not an http(s) URL: {url}")
    if parts.scheme == "http" and not allow_http:
        raise FetchError(FetchResult.INVALID, f"plain http is not allowed: {url}")
    deadline = time.monotonic() + timeout
    try:
        conn, target, routing, via = _connection(parts, timeout, tls, public_only=public_only)
    except ProxyConfigError as exc:
        raise FetchError(FetchResult.INVALID, f"{url}: {exc}") from None
    except OSError as exc:  # resolving the name for a public-only fetch through a proxy
        raise FetchError(FetchResult.CONNECT_ERROR, f"{url}: {exc}") from None
    response: http.client.HTTPResponse | None = None
    try:
        conn.request(method, target, body=body, headers={**headers, **routing})
        _bound(conn, deadline)
        response = conn.getresponse()
        if 300 <= response.status < 400:
            where = response.getheader("Location", "?")
            raise FetchError(
                FetchResult.REDIRECT, f"{url}: HTTP {response.status} to {where} not followed"
            )
        if response.status != 200:
            raise FetchError(FetchResult.HTTP_STATUS, f"{url}: HTTP {response.status}")
        content = _read(conn, response, deadline, max_bytes, url)
        max_age = _max_age(response.getheader("Cache-Control", ""))
    except FetchError:
        raise
    except TimeoutError:
        raise FetchError(
            FetchResult.TIMEOUT, f"{url}{via}: no answer within {timeout:g}s"
        ) from None
    except ssl.SSLError as exc:
        raise FetchError(FetchResult.TLS_ERROR, f"{url}{via}: TLS: {exc}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise FetchError(
            FetchResult.CONNECT_ERROR, f"{url}{via}: {exc or type(exc).__name__}"
        ) from None
    finally:
        if response is not None:
            response.close()  # else its socket stays open until garbage collection
        conn.close()
    try:
        document = decode(content)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FetchError(FetchResult.INVALID, f"{url}: not usable JSON: {exc}") from None
    return Fetched(document, max_age)


def _connection(
    parts: urllib.parse.SplitResult, timeout: float, tls: ssl.SSLContext, *, public_only: bool
) -> tuple[http.client.HTTPConnection, str, dict[str, str], str]:
    """The connection, request target and the headers routing needs (Host through a proxy,
    Proxy-Authorization for plain http) for a URL, direct or through the proxy the
    environment names; the last item says which proxy, for messages (" via proxy h:p")."""
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    proxy: Proxy | None = proxy_for(parts.scheme, host, port)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn: http.client.HTTPConnection
    if proxy is None:
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=tls)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        if public_only:  # http.client's own hook for making the connection (HTTPS wraps it)
            conn._create_connection = _public_connection  # type: ignore[attr-defined]
        return conn, target, {}, ""
    netloc = f"[{host}]" if ":" in host else host
    named = {"Host": netloc if parts.port is None else f"{netloc}:{port}"}
    address = _public_address(host, port) if public_only else host
    where = f" via {proxy.where}"
    if parts.scheme == "https":  # CONNECT address:port, then TLS with the key server's name
        conn = _TunnelledHTTPS(proxy, address, port, server_name=host, timeout=timeout, context=tls)
        return conn, target, named, where
    # plain http (allowInsecureHttp): the proxy gets the absolute URL
    conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=timeout)
    literal = f"[{address}]" if ":" in address else address
    return conn, f"http://{literal}:{port}{target}", {**named, **proxy.headers()}, where


class _TunnelledHTTPS(http.client.HTTPSConnection):
    """HTTPS through a proxy's CONNECT tunnel to `address`, verifying the key server's
    certificate for `server_name` (which differs from `address` when it was resolved here)."""

    def __init__(
        self, proxy: Proxy, address: str, port: int, *, server_name: str, **kwargs: Any
    ) -> None:
        super().__init__(proxy.host, proxy.port, **kwargs)
        self.set_tunnel(address, port, headers=proxy.headers())
        self._server_name = server_name

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)  # TCP to the proxy, then CONNECT
        context: ssl.SSLContext = self._context  # type: ignore[attr-defined]
        self.sock = context.wrap_socket(self.sock, server_hostname=self._server_name)


def _public_address(host: str, port: int) -> str:
    """The first address `host` resolves to that a public-only fetch may reach."""
    refused = []
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = str(sockaddr[0])
        why = _local(address)
        if why is None:
            return address
        refused.append(f"{address} ({why})")
    raise FetchError(
        FetchResult.CONNECT_ERROR,
        f"{host} resolves only to addresses this issuer may not fetch from: {', '.join(refused)}",
    )


def _bound(conn: http.client.HTTPConnection, deadline: float) -> None:
    """Give the next socket operation only what is left of the fetch's time."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    if conn.sock is not None:
        conn.sock.settimeout(remaining)


def _read(
    conn: http.client.HTTPConnection,
    response: http.client.HTTPResponse,
    deadline: float,
    max_bytes: int,
    url: str,
) -> bytes:
    """The body, refused early when Content-Length is too big and cut off at `max_bytes`.

    `read1` returns after one socket read, so a server dripping bytes cannot stretch
    the fetch past its deadline.
    """
    length = response.getheader("Content-Length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise FetchError(
            FetchResult.TOO_LARGE, f"{url}: body of {length} bytes exceeds {max_bytes}"
        )
    chunks: list[bytes] = []
    size = 0
    while True:
        _bound(conn, deadline)
        chunk = response.read1(_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise FetchError(FetchResult.TOO_LARGE, f"{url}: body exceeds {max_bytes} bytes")
        chunks.append(chunk)


def _max_age(cache_control: str) -> int | None:
    match = _MAX_AGE.search(cache_control)
    return int(match.group(1)) if match else None


# The same limits for the other background fetchers (the OpenID provider's discovery and
# token endpoint, authz.oidc.http): one deadline per exchange, bounded bodies, public-only.
public_connection = _public_connection
bound = _bound
read_body = _read
