"""Credential kinds: how a request proves who is calling, behind one small interface.

A kind finds its credential in the request view (`find`) and turns it into a verified
identity or a reason (`verify`). The authenticate step (`authz.request.authenticate`) asks
every kind a policy accepts; the bearer JWT is the first kind.
"""

from __future__ import annotations

from typing import Protocol

from authz.policy.issuer import TokenSource
from authz.policy.snapshot import CompiledPolicy
from authz.request.decision import Identity
from authz.request.jose import TokenError
from authz.request.records import record
from authz.request.verify import VerifiedToken
from authz.request.view import RequestView


@record
class Presented:
    """A credential found in a request, not yet verified. `secret` is never logged.
    `request` is the request it came in: what a key-bound credential is checked against
    (a DPoP proof, the connection's client certificate)."""

    kind: CredentialKind
    secret: str
    source: TokenSource
    request: RequestView | None = None


@record
class Authentication:
    """The result of the authenticate step: an identity, or the failure that denies it.

    `verified` is the token behind it when signature and times checked out, even if a later
    check (token source, audience) refused it: audit lines and explanations name its issuer.
    `source` is where the credential came (header, cookie or query parameter): removed
    upstream by stripAuthorization.
    `reused` says `verified` is the very object an earlier request was given (a hot hit in
    the token cache, an introspection answer's kept token): what is derived from it and
    kept per object (the decision, the answer, its rendering) is found by the next request.
    A token decoded again from a cold record is not: keeping what was derived from it would
    only hold memory until the memo fills.
    `binding` names what proved the caller holds the token's key: "dpop" (a DPoP proof) or
    "x5t#S256" (the client certificate); None for a plain bearer token.
    `digest` is the SHA-256 of the credential (never the credential): what is minted for
    it (an internal token) is cached under it.
    `cookies` are Set-Cookie values for the client's response (a session renewed or ended).
    """

    identity: Identity | None
    failure: TokenError | None = None
    verified: VerifiedToken | None = None
    source: TokenSource | None = None
    reused: bool = False
    binding: str | None = None
    digest: bytes | None = None
    cookies: tuple[str, ...] = ()


class CredentialKind(Protocol):
    def find(self, request: RequestView, policy: CompiledPolicy) -> Presented | None:
        """The credential of this kind in `request`, or None; raises TokenError for a
        malformed or repeated one (400 invalid_request)."""
        ...

    def verify(
        self, presented: Presented, policy: CompiledPolicy, *, may_wait: bool
    ) -> Authentication:
        """Verify a credential this kind found; never raises for a bad credential. With
        `may_wait` false it raises WouldWait instead of waiting for a fetch elsewhere."""
        ...
