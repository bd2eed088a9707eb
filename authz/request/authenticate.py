"""The authenticate step: a request view and a policy -> a verified identity, or a reason.

Every credential kind gets to look; one credential per request (RFC 6750 section 2), so
two kinds both finding one is a malformed request. None means no credential was sent:
the rule decides whether that is anonymous access or a 401. A valid credential of any
kind, cached or not, is then checked against the revoked tokens (TokenRevocation).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from authz.policy.revocation import NO_REVOCATIONS, Revocations
from authz.policy.snapshot import CompiledPolicy
from authz.request.credentials import Authentication, CredentialKind, Presented
from authz.request.decision import Identity, Reason
from authz.request.jose import TokenError
from authz.request.view import RequestView


class Authenticator:
    def __init__(
        self, kinds: tuple[CredentialKind, ...], *, clock: Callable[[], float] = time.time
    ) -> None:
        self._kinds = kinds
        self._clock = clock

    def authenticate(
        self,
        request: RequestView,
        policy: CompiledPolicy,
        *,
        may_wait: bool = True,
        revocations: Revocations = NO_REVOCATIONS,
    ) -> Authentication | None:
        presented: Presented | None = None
        try:
            for kind in self._kinds:
                found = kind.find(request, policy)
                if found is None:
                    continue
                if presented is not None:
                    raise TokenError(
                        Reason.TOKEN_MULTIPLE, "more than one credential; RFC 6750 allows one"
                    )
                presented = found
        except TokenError as exc:
            return Authentication(None, exc)
        if presented is None:
            return None
        result = presented.kind.verify(presented, policy, may_wait=may_wait)
        if revocations and result.identity is not None:
            return _unless_revoked(result, result.identity, revocations, self._clock())
        return result


def _unless_revoked(
    result: Authentication, who: Identity, revocations: Revocations, now: float
) -> Authentication:
    """The authentication, or a failure naming the entry that revokes its token."""
    iss = who.claims.get("iss")
    entry = revocations.revoked(iss if isinstance(iss, str) else who.issuer, who.claims, now)
    if entry is None:
        return result
    failure = TokenError(Reason.TOKEN_REVOKED, f"revoked by {entry.describe()}"[:512])
    return Authentication(None, failure, result.verified, result.source)
