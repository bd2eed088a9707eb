"""Opaque tokens (and JWTs an issuer wants introspected), vouched for by the issuer (RFC 7662).

The token is found where the policy's issuers look for bearer tokens; it is this kind's when
the policy routes it to introspection (`IntrospectionRoute`): a token that is not a JWT goes
to the policy's first introspecting issuer, a JWT to its issuer's endpoint when that issuer
introspects JWTs too. The bearer JWT kind leaves such tokens alone, so one credential is
never claimed twice.

The answer comes from the issuer's introspector (its cache, or a bounded call made off the
request path); an active answer becomes the same Identity a JWT gives (`scope`, `aud`,
`exp`, `sub`, `client_id` and any other member are claims), checked the same way: token
source, audience, times. A `cnf` member binds the token as a JWT's does (RFC 8705
section 3.2, RFC 9449 section 6.2): a certificate-bound one needs that client certificate,
a DPoP-bound one is refused as a bearer token (this kind takes no DPoP proofs). What it derives from an answer is kept with the cached answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from authz.introspection.answer import Introspected
from authz.introspection.introspector import Pending, Unavailable
from authz.policy.issuer import CompiledIssuer
from authz.policy.snapshot import CompiledPolicy
from authz.request.credentials import Authentication, Presented
from authz.request.credentials.bearer_jwt import check_audience
from authz.request.credentials.binding import check_bearer
from authz.request.credentials.route import introspecting_issuer
from authz.request.decision import Reason
from authz.request.extract import extract_token
from authz.request.jose import TokenError
from authz.request.verify import VerifiedToken, WouldWait, identity_of
from authz.request.view import RequestView


class IntrospectedToken:
    def __init__(
        self, *, max_token_bytes: int = 16384, clock: Callable[[], float] = time.time
    ) -> None:
        self.max_token_bytes = max_token_bytes
        self._clock = clock

    def find(self, request: RequestView, policy: CompiledPolicy) -> Presented | None:
        if policy.introspection is None:
            return None
        found = extract_token(request, policy.token_sources)
        if found is None or introspecting_issuer(found[0], policy) is None:
            return None
        return Presented(self, found[0], found[1], request)

    def verify(
        self, presented: Presented, policy: CompiledPolicy, *, may_wait: bool = True
    ) -> Authentication:
        token, source = presented.secret, presented.source
        issuer = introspecting_issuer(token, policy)
        assert issuer is not None and issuer.introspection is not None  # as `find` chose
        if len(token) > self.max_token_bytes:
            failure = TokenError(
                Reason.TOKEN_TOO_LARGE, f"token longer than {self.max_token_bytes} bytes"
            )
            return Authentication(None, failure, source=source)
        now = self._clock()
        try:
            answer = issuer.introspection.lookup(token, wait=may_wait, now=now)
        except Pending:
            raise WouldWait(issuer.id) from None
        except Unavailable as exc:
            failure = TokenError(Reason.INTROSPECTION_UNAVAILABLE, exc.detail)
            return Authentication(None, failure, source=source)
        if not answer.active:
            failure = TokenError(Reason.TOKEN_INACTIVE, f"{issuer.id}: the token is not active")
            return Authentication(None, failure, source=source)
        derived, reused = _derived(answer, issuer)
        if isinstance(derived, TokenError):
            return Authentication(None, derived, source=source)
        try:
            _check_times(derived, now)
            if source not in issuer.token_sources:
                raise TokenError(
                    Reason.SOURCE_NOT_ALLOWED, f"{source.label} is not a source of this issuer"
                )
            check_audience(derived, policy)
            binding = check_bearer(derived, presented.request, policy)
        except TokenError as exc:
            return Authentication(None, exc, derived, source)
        return Authentication(derived.identity, None, derived, source, reused, binding=binding)


def _derived(
    answer: Introspected, issuer: CompiledIssuer
) -> tuple[VerifiedToken | TokenError, bool]:
    """The verified token an active answer makes for `issuer` (or why it makes none), and
    whether it was derived before. Kept with the cached answer, per issuer object."""
    memo = answer.memo
    if memo is not None and memo[0] is issuer:
        return memo[1], True
    derived = _derive(answer, issuer)
    answer.memo = (issuer, derived)  # one reference swap: a racing thread derives the same
    return derived, False


def _derive(answer: Introspected, issuer: CompiledIssuer) -> VerifiedToken | TokenError:
    if answer.problem is not None:
        return TokenError(Reason.CLAIM_INVALID, f"introspection answer: {answer.problem}")
    claims = dict(answer.claims)
    iss = claims.get("iss")
    if iss is None:
        if issuer.iss_values:
            return TokenError(
                Reason.CLAIM_INVALID, "introspection answer names no iss; this issuer has tenants"
            )
        claims["iss"] = issuer.issuer  # identity headers and audit name the issuer
    elif iss not in issuer.accepted_iss:
        return TokenError(Reason.CLAIM_INVALID, "introspection answer names another issuer")
    return VerifiedToken(
        issuer, claims, None, answer.expires_at, None, identity_of(issuer, claims, None)
    )


def _check_times(token: VerifiedToken, now: float) -> None:
    """An active answer past its exp (a lagging endpoint, or clocks apart) or before its
    nbf is refused as a JWT would be, with the issuer's skew."""
    skew = token.issuer.clock_skew
    if token.expires_at is not None and now >= token.expires_at + skew:
        raise TokenError(Reason.TOKEN_EXPIRED, "token has expired")
    nbf = token.claims.get("nbf")
    if isinstance(nbf, int | float) and not isinstance(nbf, bool) and nbf > now + skew:
        raise TokenError(Reason.TOKEN_NOT_YET_VALID, "token is not valid yet ('nbf')")
