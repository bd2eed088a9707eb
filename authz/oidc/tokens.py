"""The provider's token endpoint (RFC 6749 section 3.2): redeem a code, refresh, revoke.
Run as jobs, never by a Check.

The client authenticates with its secret (`client_secret_basic` or `client_secret_post`) or
with a JWT signed by its private key (`private_key_jwt`), which keeps the secret off the wire:
authz.keys.client_auth, shared with the introspection client.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from authz.keys.client_auth import ClientAuth
from authz.keys.fetch import FetchError, FetchResult
from authz.oidc.http import HttpSettings, Reply, request_json


@dataclass(frozen=True, slots=True)
class TokenSet:
    """A successful token response (RFC 6749 5.1); tokens never appear in `repr`."""

    access_token: str = field(repr=False)
    token_type: str
    expires_in: int | None
    refresh_token: str | None = field(default=None, repr=False)
    id_token: str | None = field(default=None, repr=False)
    scope: str | None = None


class GrantRefused(Exception):
    """The token endpoint refused the grant (RFC 6749 5.2): `error` is its code
    (`invalid_grant`: the code was used or the refresh token revoked)."""

    def __init__(self, status: int, error: str, description: str = "") -> None:
        super().__init__(f"HTTP {status}: {error}" + (f": {description}" if description else ""))
        self.status = status
        self.error = error
        self.description = description


def redeem(
    endpoint: str,
    client: ClientAuth,
    *,
    code: str,
    verifier: str,
    redirect_uri: str,
    http: HttpSettings,
) -> TokenSet:
    """Exchange an authorization code and its PKCE verifier for tokens."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
    }
    return _grant(endpoint, client, form, http)


def refresh(endpoint: str, client: ClientAuth, refresh_token: str, http: HttpSettings) -> TokenSet:
    return _grant(
        endpoint, client, {"grant_type": "refresh_token", "refresh_token": refresh_token}, http
    )


def revoke(endpoint: str, client: ClientAuth, token: str, hint: str, http: HttpSettings) -> None:
    """RFC 7009: best effort (the caller does not wait); raises on failure for the log."""
    form = {"token": token, "token_type_hint": hint}
    reply = _post(endpoint, client, form, http)
    if reply.status != 200:
        raise FetchError(FetchResult.HTTP_STATUS, f"revocation: HTTP {reply.status}")


def _post(endpoint: str, client: ClientAuth, form: dict[str, str], http: HttpSettings) -> Reply:
    """POST `form` to `endpoint`, authenticated as `client`."""
    auth, headers = client.apply(endpoint, time.time())
    return request_json("POST", endpoint, http, form=form | auth, headers=headers)


def _grant(endpoint: str, client: ClientAuth, form: dict[str, str], http: HttpSettings) -> TokenSet:
    reply = _post(endpoint, client, form, http)
    doc = reply.document if isinstance(reply.document, dict) else {}
    if reply.status != 200:
        error = doc.get("error")
        if reply.status in (400, 401) and isinstance(error, str):
            description = doc.get("error_description")
            raise GrantRefused(
                reply.status, error[:64], description[:300] if isinstance(description, str) else ""
            )
        raise FetchError(FetchResult.HTTP_STATUS, f"token endpoint: HTTP {reply.status}")
    return token_set(doc)


def token_set(doc: dict[str, Any]) -> TokenSet:
    """A token response as RFC 6749 5.1 defines it; raises FetchError when it is not one."""
    access, kind = doc.get("access_token"), doc.get("token_type")
    if not isinstance(access, str) or not access or not isinstance(kind, str):
        raise FetchError(FetchResult.INVALID, "token response without access_token/token_type")
    raw = doc.get("expires_in")
    expires = int(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else None
    fields = {}
    for name in ("refresh_token", "id_token", "scope"):
        value = doc.get(name)
        fields[name] = value if isinstance(value, str) and value else None
    return TokenSet(access, kind, expires, **fields)
