"""Decision -> Answer: the only place HTTP statuses, challenges and identity headers are chosen.

RFC 6750 section 3: no credentials -> 401 with a bare Bearer challenge; bad
credentials -> 401 `invalid_token`; valid but not enough -> 403
`insufficient_scope` with the scopes needed; malformed -> 400
`invalid_request`. An `Answer` is wire-neutral: each transport renders it (gRPC
CheckResponse, HTTP response). Denials are built once and reused; the token is never echoed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from authz.policy.snapshot import CompiledPolicy
from authz.request.claims import claim, scalar_text
from authz.request.decision import Decision, Identity, Reason

# reason -> (HTTP status, RFC 6750 error code or None, what the client is told)
OUTCOMES: dict[Reason, tuple[int, str | None, str]] = {
    Reason.TOKEN_MISSING: (401, None, "a bearer token is required"),
    Reason.REQUEST_INVALID: (400, "invalid_request", "the request is malformed"),
    Reason.TOKEN_MULTIPLE: (400, "invalid_request", "more than one token was sent"),
    Reason.TOKEN_MALFORMED: (401, "invalid_token", "the token is malformed"),
    Reason.TOKEN_TOO_LARGE: (401, "invalid_token", "the token is too large"),
    Reason.ISSUER_UNKNOWN: (401, "invalid_token", "the token issuer is not trusted"),
    Reason.ISSUER_NOT_TRUSTED: (401, "invalid_token", "the token issuer is not trusted"),
    Reason.SOURCE_NOT_ALLOWED: (
        401,
        "invalid_token",
        "the token was sent in a place its issuer does not use",
    ),
    Reason.ALGORITHM_NOT_ALLOWED: (401, "invalid_token", "the token algorithm is not accepted"),
    Reason.HEADER_UNSUPPORTED: (401, "invalid_token", "the token uses an unsupported header"),
    Reason.TYP_MISMATCH: (401, "invalid_token", "the token type is not accepted"),
    Reason.KEY_NOT_FOUND: (401, "invalid_token", "the token signing key is unknown"),
    Reason.KEYS_UNAVAILABLE: (401, "invalid_token", "the issuer keys are unavailable"),
    Reason.SIGNATURE_INVALID: (401, "invalid_token", "the token signature is invalid"),
    Reason.CLAIM_INVALID: (401, "invalid_token", "the token has an invalid claim"),
    Reason.TOKEN_EXPIRED: (401, "invalid_token", "the token has expired"),
    Reason.TOKEN_NOT_YET_VALID: (401, "invalid_token", "the token is not yet valid"),
    Reason.TOKEN_ISSUED_IN_FUTURE: (401, "invalid_token", "the token is issued in the future"),
    Reason.LIFETIME_EXCEEDED: (401, "invalid_token", "the token lifetime is too long"),
    Reason.AUDIENCE_MISMATCH: (401, "invalid_token", "the token audience is not accepted"),
    Reason.INSUFFICIENT_SCOPE: (403, "insufficient_scope", "the token lacks a required scope"),
    Reason.INSUFFICIENT_ROLE: (403, "insufficient_scope", "the token lacks a required role"),
    Reason.CLAIM_MISMATCH: (403, "insufficient_scope", "the token does not meet the policy"),
    Reason.RULE_DENIED: (403, "access_denied", "the request is denied by policy"),
    Reason.NO_POLICY: (403, "access_denied", "no policy allows this request"),
    Reason.NO_RULE: (403, "access_denied", "no rule allows this request"),
    Reason.PROXY_NOT_TRUSTED: (
        403,
        "access_denied",
        "the request did not come from a trusted proxy",
    ),
    Reason.INTERNAL_ERROR: (403, "access_denied", "the request could not be authorized"),
    Reason.OVERLOADED: (503, "temporarily_unavailable", "authz is overloaded; retry later"),
}


Metadata = tuple[tuple[str, str | tuple[str, ...]], ...]


@dataclass(frozen=True, slots=True)
class Answer:
    """What the proxy is to do, in no wire format.

    Allow (status 200): set `headers` on the upstream request, remove `remove` from it, and
    pass `metadata` (issuer, subject, policy, rule, scopes) to later filters. Deny: answer
    the client with `status`, `headers` (content type, challenge) and `body`. A `shared`
    answer is reused for many requests, so a transport may keep its rendering too.
    """

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()
    body: str = ""
    metadata: Metadata = ()
    shared: bool = field(default=False, compare=False)

    @property
    def allowed(self) -> bool:
        return self.status == 200


def http_status(decision: Decision) -> int:
    return 200 if decision.allowed else OUTCOMES[decision.reason][0]


def challenge(reason: Reason, realm: str, scopes: tuple[str, ...] = ()) -> str | None:
    """The WWW-Authenticate value for a denial, or None for non-Bearer denials (403 by rule,
    503 overloaded: neither is about the credential)."""
    status, error, description = OUTCOMES[reason]
    if error == "access_denied" or status >= 500:
        return None
    parts = [f'Bearer realm="{realm}"']
    if error is not None:
        parts.append(f'error="{error}"')
        parts.append(f'error_description="{description}"')
    if scopes and status == 403:
        parts.append(f'scope="{" ".join(scopes)}"')
    return ", ".join(parts)


# Bounds on the memos below: denials vary only by policy-defined scope sets; allow answers
# by cached identity, so that memo is simply emptied when full.
_MAX_DENIALS = 4096
_MAX_ALLOWED = 4096
_AllowKey = tuple[int, str, str | None, str | None, str | None]


class Responder:
    """Builds Answers. Answers are immutable, so they are memoised: denials per (reason,
    scopes), allow answers per (cached identity, policy, rule, carrier), which makes a
    cache-hit Check reuse the answer (and the transport its rendering) instead of
    rebuilding identity headers from claims every time."""

    def __init__(self, realm: str) -> None:
        self.realm = realm
        self._denials: dict[tuple[Reason, tuple[str, ...]], Answer] = {}
        self._allowed: dict[_AllowKey, tuple[Identity, CompiledPolicy, Answer]] = {}

    def deny(self, decision: Decision) -> Answer:
        key = (decision.reason, decision.required_scopes)
        answer = self._denials.get(key)
        if answer is None:
            answer = self._denial(*key)
            if len(self._denials) < _MAX_DENIALS:
                self._denials[key] = answer
        return answer

    def _denial(self, reason: Reason, scopes: tuple[str, ...]) -> Answer:
        status, error, description = OUTCOMES[reason]
        headers = [("content-type", "application/json")]
        value = challenge(reason, self.realm, scopes)
        if value is not None:
            headers.append(("www-authenticate", value))
        body = {"error": error or "unauthorized", "error_description": description}
        return Answer(
            status,
            reason.value,
            tuple(headers),
            body=json.dumps(body, separators=(",", ":")),
            shared=True,
        )

    def allow(
        self,
        decision: Decision,
        policy: CompiledPolicy | None,
        carrier: str | None,
        *,
        reused: bool = False,
    ) -> Answer:
        """`reused`: the identity is a cached one, so its answer is kept for the next
        request (a fresh identity's answer is not: keeping it would only load the GC)."""
        who = decision.identity
        if who is None or policy is None or not reused:
            return self._allow(decision, policy, carrier)
        # The memo holds `who`, so its id cannot be reused while the entry lives.
        key = (id(who), decision.reason.value, decision.policy, decision.rule, carrier)
        memo = self._allowed.get(key)
        if memo is not None and memo[0] is who and memo[1] is policy:
            return memo[2]
        answer = self._allow(decision, policy, carrier, shared=True)
        if len(self._allowed) >= _MAX_ALLOWED:
            self._allowed.clear()
        self._allowed[key] = (who, policy, answer)
        return answer

    def _allow(
        self,
        decision: Decision,
        policy: CompiledPolicy | None,
        carrier: str | None,
        *,
        shared: bool = False,
    ) -> Answer:
        """Allow with identity headers. Every configured identity header is either set or
        removed, so a client cannot smuggle its own `x-auth-subject` to the upstream."""
        headers: list[tuple[str, str]] = []
        remove: list[str] = []
        who = decision.identity
        if policy is not None:
            for spec in policy.response.headers:
                value = None
                if who is not None:
                    value = _header_value(spec.claim, who.scopes, who.roles, who.claims)
                if value is None:
                    remove.append(spec.name)
                else:
                    headers.append((spec.name, value))
            if policy.response.strip_authorization and carrier is not None:
                remove.append(carrier)
        metadata: Metadata = ()
        if who is not None:
            metadata = (
                ("issuer", who.issuer),
                ("subject", who.subject or ""),
                ("policy", decision.policy or ""),
                ("rule", decision.rule or ""),
                ("scopes", who.scopes),
            )
        return Answer(
            200,
            decision.reason.value,
            tuple(headers),
            tuple(remove),
            metadata=metadata,
            shared=shared,
        )


def _header_value(
    path: object, scopes: Iterable[str], roles: Iterable[str], claims: object
) -> str | None:
    if path == "$scopes":
        return _safe(" ".join(scopes))
    if path == "$roles":
        return _safe(" ".join(roles))
    assert isinstance(path, tuple) and isinstance(claims, dict)
    value = claim(claims, path)
    if isinstance(value, list):
        texts = [scalar_text(v) for v in value]
        joined = ",".join(t for t in texts if t is not None)
        return _safe(joined)
    text = scalar_text(value)
    return _safe(text) if text is not None else None


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _safe(value: str) -> str | None:
    """Header values must not carry control characters (a token could try header injection)."""
    if not value or _CONTROL.search(value) is not None:
        return None
    return value
