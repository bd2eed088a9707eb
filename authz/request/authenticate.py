"""The authenticate step: a request view and a policy -> a verified identity, or a reason.

Every credential kind gets to look; one credential per request (RFC 6750 section 2), so
two kinds both finding one is a malformed request. None means no credential was sent:
the rule decides whether that is anonymous access or a 401.
"""

from __future__ import annotations

from authz.policy.snapshot import CompiledPolicy
from authz.request.credentials import Authentication, CredentialKind, Presented
from authz.request.decision import Reason
from authz.request.jose import TokenError
from authz.request.view import RequestView


class Authenticator:
    def __init__(self, kinds: tuple[CredentialKind, ...]) -> None:
        self._kinds = kinds

    def authenticate(
        self, request: RequestView, policy: CompiledPolicy, *, may_wait: bool = True
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
        return presented.kind.verify(presented, policy, may_wait=may_wait)
