"""DPoP proofs and DPoP-bound tokens for tests (RFC 9449), signed at test time.

    client = DPoPClient()                              # a fresh ES256 proof key
    token = bearer_token(cnf={"jkt": client.jkt})      # an access token bound to it
    headers = client.headers(token, "GET", "https://api.example/orders")

Proofs are built by hand around `authz.devtools.mint_token`, so a test can break any part
of one (header, claims, key) the way an attacker would.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from authz.devtools import generate_key, mint_token
from authz.keys.thumbprint import b64url, jwk_thumbprint
from tests.support.tokens import NOW

DROP = object()


def ath(token: str) -> str:
    return b64url(hashlib.sha256(token.encode("ascii")).digest())


class DPoPClient:
    """A client's proof key and the proofs it signs."""

    def __init__(self, alg: str = "ES256", *, kid: str = "dpop") -> None:
        private, public = generate_key(alg, kid)
        self.alg = alg
        self.private = private
        # The proof carries only the public members (no kid, alg or use needed).
        self.public = {k: v for k, v in public.items() if k not in ("kid", "alg", "use")}
        self.jkt = jwk_thumbprint(self.public)

    def proof(
        self,
        token: str | None,
        htm: str = "GET",
        htu: str = "https://api.example/",
        *,
        iat: float = NOW,
        jti: Any = None,
        nonce: str | None = None,
        header: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """A proof; `claims` override or (with DROP) remove the standard ones; `header`
        is merged into the JOSE header (typ, alg, jwk can all be replaced)."""
        body: dict[str, Any] = {
            "jti": jti if jti is not None else secrets.token_urlsafe(12),
            "htm": htm,
            "htu": htu,
            "iat": iat,
        }
        if token is not None:
            body["ath"] = ath(token)
        if nonce is not None:
            body["nonce"] = nonce
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not DROP}
        jose = {"typ": "dpop+jwt", "jwk": self.public, **(header or {})}
        signer = {k: v for k, v in self.private.items() if k != "kid"}
        return mint_token(signer, body, headers=jose)

    def headers(
        self, token: str, htm: str = "GET", htu: str = "https://api.example/", **kw: Any
    ) -> dict[str, str]:
        """`Authorization: DPoP <token>` and a fresh proof for this request."""
        return {"authorization": f"DPoP {token}", "dpop": self.proof(token, htm, htu, **kw)}
