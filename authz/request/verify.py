"""Token verification: a compact JWS and the trusted issuers in, a VerifiedToken out.

Checks run cheapest first, as Envoy's jwt_authn does: parsing, issuer lookup, the
algorithm allowlist, `typ`, claim types and time windows, and only then the signature.
Every failure is a TokenError whatever the order, so a forged token never passes
because an earlier check happened to succeed. Audiences are left to the authorizer,
which knows the policy that applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from authz.keys.jwk import KeySet, verify_signature
from authz.policy.issuer import CompiledIssuer
from authz.request.claims import claim, collect
from authz.request.decision import Identity, Reason
from authz.request.jose import TokenError, claims_of, parse_jws

_MEDIA_TYPE_PREFIX = "application/"


class WouldWait(Exception):
    """Deciding needs a bounded wait for a key refetch running elsewhere, and the caller
    asked not to wait (an event loop must not block): run the check again where waiting
    is cheap. Not a decision: nothing about the token is known yet."""


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """A token whose signature and time window checked out; `expires_at` bounds any cache
    entry, and `keys` is the key set it verified against, so a cache entry dies with it
    (None: the issuer vouched for it by introspection, no key was involved).
    `identity` is what the token says about its bearer, read once with the issuer's claim
    mapping (it is cached with the token). The header is not kept (only its kid): 100k
    cached tokens is the memory budget. `payload` is the JSON the claims were decoded from
    (None for an introspection answer): the token cache keeps only that for most entries,
    a fifth of the claims' size in memory, and `restore` rebuilds the token from it."""

    issuer: CompiledIssuer
    claims: Mapping[str, Any]
    kid: str | None
    expires_at: float | None
    keys: KeySet | None
    identity: Identity
    payload: bytes | None = None


def verify(
    token: str,
    issuers: Mapping[str, CompiledIssuer],
    now: float,
    max_size: int = 16384,
    *,
    may_wait: bool = True,
) -> VerifiedToken:
    """Verify `token` against the issuer its `iss` names; raises TokenError with the reason,
    or WouldWait when `may_wait` is false and an unknown kid's refetch could bring its key."""
    parsed = parse_jws(token, max_size)
    header, claims = parsed.header, claims_of(parsed.payload)

    iss = claims.get("iss")
    if not isinstance(iss, str):
        raise TokenError(Reason.CLAIM_INVALID, "'iss' missing or not a string")
    issuer = issuers.get(iss)
    if issuer is None:
        raise TokenError(Reason.ISSUER_UNKNOWN, "issuer is not trusted")

    alg: str = header["alg"]
    # "none" is refused in any casing even if an issuer were configured with it.
    if alg not in issuer.algorithms or alg.lower() == "none":
        raise TokenError(Reason.ALGORITHM_NOT_ALLOWED, f"alg {alg[:32]!r} is not allowed")

    if issuer.require_typ is not None and not _typ_matches(header.get("typ"), issuer.require_typ):
        raise TokenError(Reason.TYP_MISMATCH, f"typ must be {issuer.require_typ!r}")

    expires_at = _check_times(claims, issuer, now)

    sub = claims.get("sub", "")
    if not isinstance(sub, str):
        raise TokenError(Reason.CLAIM_INVALID, "'sub' is not a string")
    aud = claims.get("aud", "")
    if not isinstance(aud, str) and not (
        isinstance(aud, list) and all(isinstance(a, str) for a in aud)
    ):
        raise TokenError(Reason.CLAIM_INVALID, "'aud' is not a string or array of strings")

    kid: str | None = header.get("kid")
    keys = issuer.keys.current()
    candidates = keys.candidates(kid, alg)
    if not candidates:
        # Only now, with every cheap check passed: the issuer may have rotated keys.
        refreshed = issuer.keys.await_refresh(kid, alg, wait=may_wait)
        if refreshed is None:
            raise WouldWait(issuer.id)
        keys = refreshed
        if not keys.keys:
            state = issuer.keys.state()
            error = state.last_error or "; ".join(state.warnings) or "not loaded yet"
            raise TokenError(Reason.KEYS_UNAVAILABLE, f"issuer keys are not available: {error}")
        candidates = keys.candidates(kid, alg)
        if not candidates:
            raise TokenError(Reason.KEY_NOT_FOUND, f"no {alg} key for kid {_clip(kid)!r}")
    for key in candidates:
        if verify_signature(key, alg, parsed.signing_input, parsed.signature):
            identity = identity_of(issuer, claims, kid)
            return VerifiedToken(issuer, claims, kid, expires_at, keys, identity, parsed.payload)
    raise TokenError(Reason.SIGNATURE_INVALID, "signature does not verify")


def check_token_kind(token: VerifiedToken, now: float) -> None:
    """The issuer's checks that make a valid token the right kind of credential, on every
    use (cheap, and `maxAgeSeconds` depends on the time): its `requiredClaims` (an ID token
    is not an access token: RFC 8725 3.11, RFC 9068) and, for a multi-tenant template with
    `tenantClaim`, that the claim names the tenant of the token's `iss`. Raises TokenError."""
    issuer, claims = token.issuer, token.claims
    for condition in issuer.required_claims:
        if not condition.holds(claims, now):
            raise TokenError(
                Reason.REQUIRED_CLAIM_MISMATCH,
                f"issuer requires {condition.text[:200]}",
            )
    if issuer.tenant_claim is not None:
        tenant = issuer.tenant_of.get(claims["iss"])
        if tenant is None or claim(claims, issuer.tenant_claim) != tenant:
            raise TokenError(
                Reason.TENANT_MISMATCH,
                f"{'.'.join(issuer.tenant_claim)} does not name the tenant of 'iss'",
            )


def restore(
    issuer: CompiledIssuer, keys: KeySet | None, kid: str | None, payload: bytes
) -> VerifiedToken:
    """A token `verify` accepted before, rebuilt from its payload: the same claims, identity
    and expiry (the token cache keeps only the payload of most of its entries)."""
    claims = claims_of(payload)
    expires_at = _numeric_date(claims, "exp")
    identity = identity_of(issuer, claims, kid)
    return VerifiedToken(issuer, claims, kid, expires_at, keys, identity, payload)


def identity_of(issuer: CompiledIssuer, claims: Mapping[str, Any], kid: str | None) -> Identity:
    """What the claims say about the bearer, read with the issuer's claim mapping."""
    sub = claims.get("sub")
    return Identity(
        issuer=issuer.issuer,
        subject=sub if isinstance(sub, str) else None,
        claims=claims,
        scopes=collect(claims, issuer.scope_claims),
        roles=collect(claims, issuer.role_claims),
        kid=kid,
    )


def _typ_matches(typ: object, required: str) -> bool:
    """Compare media types as RFC 7515 4.1.9 says: case-insensitive, `application/` optional."""
    if not isinstance(typ, str):
        return False
    return typ.lower().removeprefix(_MEDIA_TYPE_PREFIX) == required.lower().removeprefix(
        _MEDIA_TYPE_PREFIX
    )


def _check_times(claims: Mapping[str, Any], issuer: CompiledIssuer, now: float) -> float | None:
    """Validate exp/nbf/iat and the lifetime bound; returns exp (the cache TTL bound)."""
    exp = _numeric_date(claims, "exp")
    nbf = _numeric_date(claims, "nbf")
    iat = _numeric_date(claims, "iat")
    skew = issuer.clock_skew
    if exp is None:
        if issuer.require_exp or issuer.max_lifetime is not None:
            raise TokenError(Reason.CLAIM_INVALID, "'exp' missing")
    elif now >= exp + skew:
        raise TokenError(Reason.TOKEN_EXPIRED, "token has expired")
    if nbf is not None and nbf > now + skew:
        raise TokenError(Reason.TOKEN_NOT_YET_VALID, "token is not valid yet ('nbf')")
    if iat is not None and iat > now + skew:
        raise TokenError(Reason.TOKEN_ISSUED_IN_FUTURE, "token was issued in the future ('iat')")
    if issuer.max_lifetime is not None and exp is not None:
        lifetime = exp - (iat if iat is not None else now)
        if lifetime > issuer.max_lifetime:
            raise TokenError(
                Reason.LIFETIME_EXCEEDED,
                f"token lifetime {lifetime:.0f}s exceeds {issuer.max_lifetime}s",
            )
    return exp


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate claim as a float; None if absent. Booleans and huge ints are invalid."""
    if name not in claims:
        return None
    value = claims[name]
    # bool is an int subclass, but `true` is not a date. The parser already refuses
    # non-finite floats; float() refuses ints beyond float range.
    if type(value) is bool or not isinstance(value, int | float):
        raise TokenError(Reason.CLAIM_INVALID, f"'{name}' is not a number")
    try:
        return float(value)
    except OverflowError:
        raise TokenError(Reason.CLAIM_INVALID, f"'{name}' is out of range") from None


def _clip(value: str | None) -> str | None:
    """Shorten attacker-chosen strings before they reach logs."""
    return None if value is None else value[:64]
