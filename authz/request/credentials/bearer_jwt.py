"""The bearer JWT (RFC 6750 + RFC 7519): a signed token in a header, cookie or query parameter.

Verification goes through the verified-token cache: a cached token counts only if this
policy trusts the very issuer object that verified it (two namespaces may declare the same
`iss`) and that issuer still serves the very key set it verified against (keys rotate).
Then the checks that depend on the policy: the token came where its issuer sends tokens,
and it names an audience the policy accepts; and those that depend on the time: the
issuer's required claims (`maxAgeSeconds`) and tenant binding. A key-bound token (its `cnf`
claim) is checked against the request: see `credentials.binding`.

For a cached token without `cnf` the checks of its source and audience depend on nothing
but the token, the policy and the token's place, all immutable: their result is kept per
(token, policy, place), so a hit on a hot cached token does not repeat them (kept only for
such a token: `Authentication.reused`; bounded; emptied when full, and when another
snapshot serves: `forget`).
The issuer's required claims and tenant binding are still checked on every use.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from authz.policy.issuer import TokenSource
from authz.policy.snapshot import CompiledPolicy
from authz.request.cache import TokenCache
from authz.request.claims import MISSING
from authz.request.credentials import Authentication, Presented
from authz.request.credentials.binding import check_bearer
from authz.request.credentials.route import introspecting_issuer
from authz.request.decision import Reason
from authz.request.extract import extract_token
from authz.request.jose import TokenError
from authz.request.verify import VerifiedToken, check_token_kind, verify
from authz.request.view import RequestView

_MAX_CHECKED = 4096
_Checked = tuple[CompiledPolicy, TokenSource, VerifiedToken, Authentication]


class BearerJwt:
    def __init__(
        self,
        cache: TokenCache,
        *,
        max_token_bytes: int = 16384,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cache = cache
        self.max_token_bytes = max_token_bytes
        self._clock = clock
        self._checked: dict[tuple[bytes, int, int], _Checked] = {}

    def forget(self) -> None:
        """Drop the kept checks: they hold policy objects, and another snapshot serves."""
        self._checked.clear()

    def find(self, request: RequestView, policy: CompiledPolicy) -> Presented | None:
        found = extract_token(request, policy.token_sources)
        if found is None:
            return None
        if policy.introspection is not None and introspecting_issuer(found[0], policy):
            return None  # the policy has this token introspected (credentials.introspected)
        return Presented(self, found[0], found[1], request)

    def verify(
        self, presented: Presented, policy: CompiledPolicy, *, may_wait: bool = True
    ) -> Authentication:
        source = presented.source
        try:
            verified, reused, digest = self.verified(presented.secret, policy, may_wait)
        except TokenError as exc:
            return Authentication(None, exc, source=source)
        # The entry holds policy, source and token, so their ids cannot be reused meanwhile.
        key = (digest, id(policy), id(source))
        if reused:
            kept = self._checked.get(key)
            if kept is not None and kept[0] is policy and kept[1] is source and kept[2] is verified:
                issuer = verified.issuer
                if issuer.required_claims or issuer.tenant_claim is not None:
                    try:  # on every use: `maxAgeSeconds` depends on the time
                        check_token_kind(verified, self._clock())
                    except TokenError as exc:
                        return Authentication(None, exc, verified, source)
                return kept[3]
        try:
            if source not in verified.issuer.token_sources:
                raise TokenError(
                    Reason.SOURCE_NOT_ALLOWED, f"{source.label} is not a source of this issuer"
                )
            check_audience(verified, policy)
            issuer = verified.issuer
            if issuer.required_claims or issuer.tenant_claim is not None:
                check_token_kind(verified, self._clock())
            binding = check_bearer(verified, presented.request, policy)
        except TokenError as exc:
            return Authentication(None, exc, verified, source)
        authentication = Authentication(
            verified.identity, None, verified, source, reused, binding=binding, digest=digest
        )
        if reused and "cnf" not in verified.claims:  # no binding: nothing read the request
            if len(self._checked) >= _MAX_CHECKED:
                self._checked.clear()
            self._checked[key] = (policy, source, verified, authentication)
        return authentication

    def verified(
        self, token: str, policy: CompiledPolicy, may_wait: bool
    ) -> tuple[VerifiedToken, bool, bytes]:
        """The verified token, whether it is the object an earlier Check was given (a hot
        hit in the token cache: `Authentication.reused`), and the token's digest. Also what
        a DPoP-bound token is verified with (`credentials.dpop`)."""
        now = self._clock()
        if len(token) > self.max_token_bytes:
            raise TokenError(
                Reason.TOKEN_TOO_LARGE, f"token longer than {self.max_token_bytes} bytes"
            )
        digest = TokenCache.digest(token)
        cached = self.cache.get(digest, now, _still_valid, policy)
        if cached is not None:
            return cached[0], cached[1], digest
        verified = verify(
            token, policy.issuers_by_iss, now, self.max_token_bytes, may_wait=may_wait
        )
        self.cache.put(digest, verified, now)
        return verified, False, digest


def check_audience(token: VerifiedToken, policy: CompiledPolicy) -> None:
    """Any-of match. No audience configured: a token naming an audience is refused
    (it was meant for someone else); audience configured: the token must name one.
    Checked here, not in `verify`, because a policy may narrow the issuer's audiences
    and verified tokens are cached across policies."""
    issuer = token.issuer
    accepted = policy.audiences if policy.audiences is not None else frozenset(issuer.audiences)
    value = token.claims.get(issuer.audience_claim, MISSING)
    if value is MISSING:
        if accepted:
            raise TokenError(Reason.AUDIENCE_MISMATCH, f"token has no {issuer.audience_claim}")
        return
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise TokenError(Reason.CLAIM_INVALID, f"{issuer.audience_claim} must be a string or list")
    if not accepted:
        raise TokenError(Reason.AUDIENCE_MISMATCH, "token names an audience; none is accepted here")
    if accepted.isdisjoint(names):
        raise TokenError(Reason.AUDIENCE_MISMATCH, "token audience not accepted")


def _still_valid(cached: VerifiedToken, policy: CompiledPolicy) -> bool:
    """A cached token counts only if this policy trusts the very issuer object that verified
    it (two namespaces may declare the same `iss`) and that issuer still serves the very key
    set it verified against (keys rotate)."""
    issuer = cached.issuer
    return policy.issuers_by_iss.get(cached.claims["iss"]) is issuer and (
        issuer.keys.current() is cached.keys
    )
