"""The neutral request view: the HTTP request the proxy routes, as every transport describes it.

A transport (gRPC ext_authz today) turns its wire input into a `RequestView` with
`request_view()`, which normalises host and path the one way all policy matching expects.
Header limits bound what any caller can make a Check walk through.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
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


@dataclass(frozen=True, slots=True)
class RequestView:
    method: str
    host: str  # lower case, without port
    path: str  # normalised, without query
    raw_path: str  # as received, with query
    headers: Mapping[str, str]  # lower-case names; the transport's own map, not copied
    context: Mapping[str, str]  # Envoy context extensions (per-route policy bindings)


def request_view(
    method: str,
    authority: str,
    raw_path: str,
    headers: Mapping[str, str],
    context: Mapping[str, str],
) -> RequestView:
    """Normalise what a transport read; raises RequestError for a path we cannot judge."""
    if not raw_path or len(raw_path) > MAX_PATH or raw_path[0] != "/":
        if raw_path == "*" and method == "OPTIONS":
            raw_path = "/"
        else:
            raise RequestError("request path missing, not absolute or too long")
    if authority.startswith("["):  # [v6]:port
        host = authority[: authority.find("]") + 1]
    else:
        host = authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority
    query_at = raw_path.find("?")
    path = raw_path if query_at < 0 else raw_path[:query_at]
    fragment_at = path.find("#")
    if fragment_at >= 0:
        path = path[:fragment_at]
    return RequestView(
        method=method.upper(),
        host=host.lower().rstrip("."),
        path=normalize_path(path),
        raw_path=raw_path,
        headers=headers,
        context=context,
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
