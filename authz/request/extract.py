"""CheckRequest -> the HTTP request view and the one bearer token it carries.

RFC 6750 section 2: a client uses one method per request, so a token found in
two places is a malformed request (400 invalid_request), not a choice to make.
An Authorization header with another scheme (Basic, Negotiate) carries no
bearer credentials: that is a missing token, as in Envoy's jwt_authn.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

from authz.decision import Reason
from authz.policy.issuer import TokenSource
from authz.request.jose import TokenError

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_MAX_PATH = 8192
# Request header limits. Envoy's own defaults are 100 client headers and 60 KiB in all; the
# count leaves room for the pseudo-headers and the ones Envoy adds (x-request-id, ...), so a
# request Envoy accepted is never refused here. They bound what a direct gRPC caller, or an
# Envoy configured far above its defaults, can make every Check walk through. One header
# may be twice the default token limit, so a long token meets `token_too_large` (401) first.
MAX_HEADERS = 128
MAX_HEADER_BYTES = 32 * 1024  # one header, name and value
MAX_HEADERS_TOTAL = 64 * 1024


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    host: str  # lower case, without port
    path: str  # normalised, without query
    raw_path: str  # as received, with query
    headers: Mapping[str, str]  # the CheckRequest's own map: lower-case names, not copied
    context: Mapping[str, str]


def _decode_unreserved(path: str) -> str:
    """Decode %XX only for unreserved characters (RFC 3986 6.2.2.2); %2F stays encoded."""
    out = []
    i = 0
    while i < len(path):
        c = path[i]
        if c == "%" and i + 3 <= len(path):
            decoded = unquote(path[i : i + 3])
            if decoded in _UNRESERVED:
                out.append(decoded)
            else:
                out.append(path[i : i + 3].upper())
            i += 3
        else:
            out.append(c)
            i += 1
    return "".join(out)


def normalize_path(path: str) -> str:
    """RFC 3986 normalisation plus merged slashes, as Envoy's normalize_path/merge_slashes do,
    so `/a/../admin`, `//admin` and `/%61dmin` all match rules for `/admin`."""
    if "%" not in path and "//" not in path and "/." not in path:
        return path
    if "%" in path:
        path = _decode_unreserved(path)
    segments: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    trailing = "/" if path.endswith(("/", "/.", "/..")) and segments else ""
    return "/" + "/".join(segments) + trailing


class RequestError(ValueError):
    """The CheckRequest cannot describe an HTTP request we can judge."""


def http_request(check_request: Any) -> HttpRequest:
    """Read the attributes Envoy sends; the fields are protobuf strings, never None."""
    attrs = check_request.attributes
    http = attrs.request.http
    raw_path = http.path
    if not raw_path or len(raw_path) > _MAX_PATH or raw_path[0] != "/":
        if raw_path == "*" and http.method == "OPTIONS":
            raw_path = "/"
        else:
            raise RequestError("request path missing, not absolute or too long")
    headers: Mapping[str, str] = http.headers
    _check_header_limits(http, len(headers) or len(http.header_map.headers))
    if not headers and len(http.header_map.headers):
        joined: dict[str, str] = {}
        headers = joined
        for h in http.header_map.headers:
            value = h.value or h.raw_value.decode("utf-8", "replace")
            key = h.key.lower()
            joined[key] = f"{joined[key]},{value}" if key in joined else value
    host = http.host or headers.get(":authority", "")
    if host.startswith("["):  # [v6]:port
        host = host[: host.find("]") + 1]
    else:
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    query_at = raw_path.find("?")
    path = raw_path if query_at < 0 else raw_path[:query_at]
    fragment_at = path.find("#")
    if fragment_at >= 0:
        path = path[:fragment_at]
    return HttpRequest(
        method=http.method.upper(),
        host=host.lower().rstrip("."),
        path=normalize_path(path),
        raw_path=raw_path,
        headers=headers,
        context=attrs.context_extensions,
    )


def _check_header_limits(http: Any, count: int) -> None:
    """Refuse oversized header sets before anything reads them. Envoy sends `headers` or
    `header_map`, never both; `count` is that one's length. The serialized size (one C
    call) bounds every header, so the per-header walk runs only for large requests."""
    if count > MAX_HEADERS:
        raise RequestError(f"request has {count} headers, over {MAX_HEADERS}")
    size = http.ByteSize()
    if size <= MAX_HEADER_BYTES:
        return
    total = 0
    pairs = [(h.key, h.value or h.raw_value) for h in http.header_map.headers]
    for key, value in [*http.headers.items(), *pairs]:
        length = len(key) + len(value)
        if length > MAX_HEADER_BYTES:
            raise RequestError(f"header {key[:64]!r} is {length} bytes, over {MAX_HEADER_BYTES}")
        total += length
    if total > MAX_HEADERS_TOTAL:
        raise RequestError(f"request headers are {total} bytes, over {MAX_HEADERS_TOTAL}")


def _from_header(value: str, source: TokenSource) -> str | None:
    if not source.prefix:
        return value.strip() or None
    if (
        len(value) < len(source.prefix)
        or value[: len(source.prefix)].lower() != source.prefix.lower()
    ):
        return None  # another scheme: no bearer credentials here
    return value[len(source.prefix) :].strip()


def _from_cookie(header: str, name: str) -> str | None:
    found = None
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            if found is not None:
                raise TokenError(Reason.TOKEN_MULTIPLE, f"cookie {name} sent more than once")
            found = value
    return found


def _from_query(raw_path: str, name: str) -> list[str]:
    query_at = raw_path.find("?")
    if query_at < 0:
        return []
    return [v for k, v in parse_qsl(raw_path[query_at + 1 :], keep_blank_values=True) if k == name]


def extract_token(
    request: HttpRequest, sources: tuple[TokenSource, ...]
) -> tuple[str, TokenSource] | None:
    """The single token in the request, or None. Raises TokenError(TOKEN_MULTIPLE or
    REQUEST_INVALID) for several tokens or an empty/garbled one (400 invalid_request)."""
    found: tuple[str, TokenSource] | None = None
    for source in sources:
        candidates: list[str] = []
        if source.kind == "header":
            value = request.headers.get(source.name)
            if value is not None:
                token = _from_header(value, source)
                if token is not None:
                    candidates.append(token)
        elif source.kind == "cookie":
            cookie = request.headers.get("cookie")
            token = _from_cookie(cookie, source.name) if cookie else None
            if token is not None:
                candidates.append(token)
        else:
            candidates.extend(_from_query(request.raw_path, source.name))
        for token in candidates:
            if found is not None:
                raise TokenError(
                    Reason.TOKEN_MULTIPLE,
                    f"more than one token ({found[1].label} and {source.label}); RFC 6750 allows one",
                )
            if not token:
                raise TokenError(Reason.REQUEST_INVALID, f"empty credentials in {source.label}")
            if "," in token:  # repeated headers arrive comma-joined
                raise TokenError(Reason.TOKEN_MULTIPLE, f"more than one token in {source.label}")
            found = (token, source)
    return found
