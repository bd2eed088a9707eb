"""A trusted issuer compiled for the request path: everything verification needs, precomputed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from authz.keys.jwk import KeySet

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
    """One trusted issuer. `id` names the object it came from, e.g. `JWTIssuer/default/demo`."""

    id: str
    issuer: str
    keys: KeySet
    algorithms: frozenset[str]
    audiences: tuple[str, ...] = ()
    audience_claim: str = "aud"
    clock_skew: int = 60
    max_lifetime: int | None = None
    require_exp: bool = True
    require_typ: str | None = None
    token_sources: tuple[TokenSource, ...] = (BEARER,)
    scope_claims: tuple[ClaimPath, ...] = (("scope",), ("scp",))
    role_claims: tuple[ClaimPath, ...] = ()
