"""Internal tokens ("wristbands"): the short JWT an allowed request carries upstream instead
of the credential it came with.

It names authz as `iss`, the policy's upstream as `aud`, and the normalised identity: `sub`,
`scope` (space-separated), `roles`, `original_iss` (the issuer that authenticated the
caller) and `act` (RFC 8693 section 4.1: the acting party, when the external token says
one acts for its subject). It never outlives the external token. Minted tokens are cached
per (credential, policy, signing key) and reused for the first half of their lifetime, so
a Check whose credential was seen before signs nothing. Signing is CPU only (ES256 or
EdDSA, tens of microseconds): no I/O on the request path. Without keys (`keys` None: the
server was not given any) every mint fails, and the request with it (503).
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from authz.keys.signing import NoSigningKey, SigningKeys
from authz.policy.possession import InternalTokenSpec
from authz.request.credentials import Authentication

_Key = tuple[bytes, str, InternalTokenSpec, str]


def actor(claims: Mapping[str, Any]) -> dict[str, Any] | None:
    """RFC 8693 `act`: kept as the external token states it, else the client (`azp` or
    `client_id`) when it is not the subject itself (a client acting for a user)."""
    act = claims.get("act")
    if isinstance(act, dict):
        return act
    for name in ("azp", "client_id"):
        client = claims.get(name)
        if isinstance(client, str) and client and client != claims.get("sub"):
            return {"sub": client}
    return None


class InternalTokens:
    def __init__(
        self,
        keys: SigningKeys | None,
        issuer: str,
        *,
        clock: Callable[[], float] = time.time,
        max_entries: int = 50_000,
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.max_entries = max_entries
        self._clock = clock
        self._minted: OrderedDict[_Key, tuple[float, str]] = OrderedDict()  # -> (reuse until, jwt)
        self._lock = threading.Lock()
        self.signed = 0  # tokens signed (a cache hit signs none)

    def mint(self, auth: Authentication, policy_id: str, spec: InternalTokenSpec) -> str:
        """The internal token for this authenticated request; raises NoSigningKey."""
        if self.keys is None:
            raise NoSigningKey("authz serve has no --internal-token-issuer/--internal-token-keys")
        signer = self.keys.signer()
        now = self._clock()
        key = (auth.digest, policy_id, spec, signer.kid) if auth.digest is not None else None
        if key is not None:
            with self._lock:
                found = self._minted.get(key)
                if found is not None and now < found[0]:
                    self._minted.move_to_end(key)
                    return found[1]
        identity = auth.identity
        assert identity is not None
        expires = now + spec.lifetime
        external = auth.verified.expires_at if auth.verified is not None else None
        if external is not None:
            expires = min(expires, external)
        iat = math.floor(now)
        exp = max(iat + 1, math.floor(expires))
        claims: dict[str, Any] = {"iss": self.issuer}
        if identity.subject is not None:
            claims["sub"] = identity.subject
        claims.update(aud=spec.audience, iat=iat, exp=exp, jti=secrets.token_urlsafe(12))
        claims["original_iss"] = identity.issuer
        if identity.scopes:
            claims["scope"] = " ".join(identity.scopes)
        if identity.roles:
            claims["roles"] = list(identity.roles)
        act = actor(identity.claims)
        if act is not None:
            claims["act"] = act
        token = signer.sign(claims)
        with self._lock:
            self.signed += 1
            if key is not None:
                self._minted[key] = (now + (exp - now) / 2, token)
                while len(self._minted) > self.max_entries:
                    self._minted.popitem(last=False)
        return token

    def clear(self) -> None:
        with self._lock:
            self._minted.clear()
