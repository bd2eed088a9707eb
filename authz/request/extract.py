"""The request view -> the one bearer token it carries, and where it came from.

RFC 6750 section 2: a client uses one method per request, so a token found in
two places is a malformed request (400 invalid_request), not a choice to make.
An Authorization header with another scheme (Basic, Negotiate) carries no
bearer credentials: that is a missing token, as in Envoy's jwt_authn.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from authz.policy.issuer import TokenSource
from authz.request.decision import Reason
from authz.request.jose import TokenError
from authz.request.view import RequestView


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
    request: RequestView, sources: tuple[TokenSource, ...]
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


def unverified_carriers(
    request: RequestView, sources: tuple[TokenSource, ...], verified: TokenSource | None
) -> tuple[str, ...]:
    """Headers of this policy's token sources that hold a credential authz did not verify:
    `Bearer<TAB>x`, `Bearerx`, or `Basic a, Bearer b` joined from two headers are not read
    as bearer tokens (that is a missing token, as in jwt_authn), but a lenient upstream may
    read them so: they must not reach it as if authz had verified them (issue 11, item 6).
    Another scheme alone (`Basic`) is the upstream's own business and stays."""
    found: list[str] = []
    for source in sources:
        if source.kind != "header" or source is verified or source == verified:
            continue
        value = request.headers.get(source.name)
        if value is None or not value.strip():
            continue
        scheme = source.prefix.strip().lower()
        if not scheme or any(part.lstrip().lower().startswith(scheme) for part in value.split(",")):
            found.append(source.name)
    return tuple(dict.fromkeys(found)) if found else ()


def without_cookie(header: str, name: str) -> str:
    """The Cookie header without the cookie `name` (a stripped token), others untouched."""
    kept = [part.strip() for part in header.split(";") if part.strip().partition("=")[0] != name]
    return "; ".join(p for p in kept if p)
