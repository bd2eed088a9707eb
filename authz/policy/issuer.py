"""A trusted issuer compiled for the request path: everything verification needs, precomputed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from authz.introspection.introspector import Introspector
from authz.keys.provider import KeyProvider

ClaimPath = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TokenSource:
    """Where a token may be carried: a header (with a scheme prefix), a cookie or a query parameter."""

    kind: Literal["header", "cookie", "query"]
    name: str  # lower-case header name, cookie name or query parameter name
    prefix: str = ""  # header only, e.g. "Bearer "; compared case-insensitively

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.name}"


BEARER = TokenSource(kind="header", name="authorization", prefix="Bearer ")


@dataclass(frozen=True, slots=True)
class CompiledIssuer:
    """One trusted issuer. `id` names the object it came from, e.g. `JWTIssuer/default/demo`.

    `keys` is read on every verification: a fixed set, or a remote source the key
    manager refreshes in the background. `iss_values` holds the concrete `iss` values
    of a multi-tenant template (`issuer` keeps the template); empty means just `issuer`.
    `introspection` checks its opaque tokens (and, with `introspect_jwts`, its JWTs) at
    its RFC 7662 endpoint; `has_keys` is false for an issuer of opaque tokens only.
    """

    id: str
    issuer: str
    keys: KeyProvider
    algorithms: frozenset[str]
    audiences: tuple[str, ...] = ()
    audience_claim: str = "aud"
    clock_skew: int = 60
    max_lifetime: int | None = None
    require_exp: bool = True
    require_typ: str | None = None
    require_dpop: bool = False  # tokens only with a DPoP proof (RFC 9449)
    token_sources: tuple[TokenSource, ...] = (BEARER,)
    scope_claims: tuple[ClaimPath, ...] = (("scope",), ("scp",))
    role_claims: tuple[ClaimPath, ...] = ()
    iss_values: tuple[str, ...] = ()
    introspection: Introspector | None = None
    introspect_jwts: bool = False
    has_keys: bool = True

    @property
    def accepted_iss(self) -> tuple[str, ...]:
        """Every `iss` this issuer answers for; policies index them in O(1)."""
        return self.iss_values or (self.issuer,)
