"""The provider's token endpoint (RFC 6749 section 3.2): redeem a code, refresh, revoke.
Run as jobs, never by a Check.

The client authenticates with its secret (`client_secret_basic`, RFC 6749 2.3.1: each part
form-urlencoded first; or `client_secret_post`) or with a JWT signed by its private key
(`private_key_jwt`, RFC 7523 and OIDC Core section 9), which keeps the secret off the wire.
"""

from __future__ import annotations

import base64
import secrets
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Literal

import jwt

from authz.keys.fetch import FetchError, FetchResult
from authz.oidc.http import HttpSettings, request_json

AuthMethod = Literal["client_secret_basic", "client_secret_post", "private_key_jwt"]
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_SECONDS = 60


@dataclass(frozen=True, slots=True)
class ClientAuth:
    """How the relying party proves it is `client_id`. Secrets never appear in `repr`."""

    client_id: str
    method: AuthMethod
    secret: str | None = field(default=None, repr=False)
    signing_key: Any = field(default=None, repr=False, compare=False)  # a PyJWT key object
    signing_alg: str | None = None
    signing_kid: str | None = None

    def apply(self, endpoint: str, form: dict[str, str], headers: dict[str, str]) -> None:
        """Add this client's authentication to a token endpoint request."""
        if self.method == "client_secret_basic":
            assert self.secret is not None
            pair = f"{_quote(self.client_id)}:{_quote(self.secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        elif self.method == "client_secret_post":
            assert self.secret is not None
            form["client_id"] = self.client_id
            form["client_secret"] = self.secret
        else:
            form["client_id"] = self.client_id
            form["client_assertion_type"] = ASSERTION_TYPE
            form["client_assertion"] = self.assertion(endpoint)

    def assertion(self, endpoint: str, now: float | None = None) -> str:
        """RFC 7523 section 3: iss and sub are the client, aud the token endpoint."""
        issued = int(time.time() if now is None else now)
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": endpoint,
            "jti": secrets.token_urlsafe(18),
            "iat": issued,
            "exp": issued + ASSERTION_SECONDS,
        }
        headers = {"kid": self.signing_kid} if self.signing_kid else None
        return jwt.encode(claims, self.signing_key, algorithm=self.signing_alg, headers=headers)


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


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
    headers: dict[str, str] = {}
    client.apply(endpoint, form, headers)
    reply = request_json("POST", endpoint, http, form=form, headers=headers)
    if reply.status != 200:
        raise FetchError(FetchResult.HTTP_STATUS, f"revocation: HTTP {reply.status}")


def _grant(endpoint: str, client: ClientAuth, form: dict[str, str], http: HttpSettings) -> TokenSet:
    headers: dict[str, str] = {}
    client.apply(endpoint, form, headers)
    reply = request_json("POST", endpoint, http, form=form, headers=headers)
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
