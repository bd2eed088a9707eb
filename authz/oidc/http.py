"""One HTTP exchange with an OpenID provider (discovery, token endpoint), with the limits
a background job needs: one deadline for the whole exchange, a bounded body, no redirects,
TLS verified, and (for a tenant's provider) no loopback or link-local addresses.

Unlike a key fetch, an error status is an answer here: a token endpoint says why it refused
a grant in a JSON body (RFC 6749 5.2), so `request_json` returns status and document.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from authz.keys import fetch
from authz.keys.fetch import FetchError, FetchResult

MAX_BYTES = 256 * 1024
_ACCEPT = "application/json"


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """How to reach one provider: the issuer's fetch settings (timeout, CA bundle, plain
    http for development, public addresses only for a tenant's issuer)."""

    timeout: float = 5.0
    ca_pem: str | None = None
    allow_http: bool = False
    public_only: bool = False

    def context(self) -> ssl.SSLContext:
        """A verifying context, made once per CA bundle (loading CAs takes milliseconds)."""
        context = _CONTEXTS.get(self.ca_pem)
        if context is None:
            if len(_CONTEXTS) >= _MAX_CONTEXTS:
                _CONTEXTS.clear()
            context = _CONTEXTS[self.ca_pem] = fetch.tls_context(self.ca_pem)
        return context


_CONTEXTS: dict[str | None, ssl.SSLContext] = {}
_MAX_CONTEXTS = 64


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    document: object  # the JSON body; None when the body is empty or not JSON


def request_json(
    method: str,
    url: str,
    settings: HttpSettings,
    *,
    form: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """`method` `url` (a form body when given); raises FetchError when no answer came or
    the answer cannot be used (redirect, too large)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise FetchError(FetchResult.INVALID, f"not an http(s) URL: {url}")
    if parts.scheme == "http" and not settings.allow_http:
        raise FetchError(FetchResult.INVALID, f"plain http is not allowed: {url}")
    deadline = time.monotonic() + settings.timeout
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=settings.timeout, context=settings.context()
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=settings.timeout)
    if settings.public_only:
        conn._create_connection = fetch.public_connection  # type: ignore[attr-defined]
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    sent = {"Accept": _ACCEPT, "User-Agent": "authz", **(headers or {})}
    body = None
    if form is not None:
        body = urllib.parse.urlencode(form).encode()
        sent["Content-Type"] = "application/x-www-form-urlencoded"
    response: http.client.HTTPResponse | None = None
    try:
        conn.request(method, target, body=body, headers=sent)
        fetch.bound(conn, deadline)
        response = conn.getresponse()
        if 300 <= response.status < 400:
            raise FetchError(
                FetchResult.REDIRECT, f"{url}: HTTP {response.status} redirect not followed"
            )
        raw = fetch.read_body(conn, response, deadline, MAX_BYTES, url)
        status = response.status
    except FetchError:
        raise
    except TimeoutError:
        raise FetchError(
            FetchResult.TIMEOUT, f"{url}: no answer within {settings.timeout:g}s"
        ) from None
    except ssl.SSLError as exc:
        raise FetchError(FetchResult.TLS_ERROR, f"{url}: TLS: {exc}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise FetchError(FetchResult.CONNECT_ERROR, f"{url}: {exc or type(exc).__name__}") from None
    finally:
        if response is not None:
            response.close()
        conn.close()
    try:
        document = json.loads(raw) if raw.strip() else None
    except (UnicodeDecodeError, ValueError):
        document = None
    return Reply(status, document)
