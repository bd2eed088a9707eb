"""The outcome of one Check: what was decided and the reason code behind it.

Every layer reports failures as a `Reason`; only `request.respond` turns a
decision into an HTTP status and challenge (transports only render that), so the
mapping lives in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from authz.request.records import record


class Reason(StrEnum):
    """Reason codes: stable strings used in logs, metrics and response bodies."""

    ALLOWED = "allowed"
    ALLOWED_ANONYMOUS = "allowed_anonymous"
    ALLOWED_BY_DEFAULT = "allowed_by_default"
    # A policy in dry-run mode would have denied; the would-be reason is logged and counted.
    ALLOWED_DRY_RUN = "allowed_dry_run"
    # 400: the request itself is malformed (RFC 6750 section 3.1 invalid_request).
    REQUEST_INVALID = "request_invalid"
    TOKEN_MULTIPLE = "token_multiple"
    # 401 without an error attribute: no credentials were sent.
    TOKEN_MISSING = "token_missing"
    # 401 invalid_token: credentials were sent and are not acceptable.
    TOKEN_MALFORMED = "token_malformed"
    TOKEN_TOO_LARGE = "token_too_large"
    ISSUER_UNKNOWN = "issuer_unknown"
    ISSUER_NOT_TRUSTED = "issuer_not_trusted"
    SOURCE_NOT_ALLOWED = "source_not_allowed"
    ALGORITHM_NOT_ALLOWED = "algorithm_not_allowed"
    HEADER_UNSUPPORTED = "header_unsupported"
    TYP_MISMATCH = "typ_mismatch"
    KEY_NOT_FOUND = "key_not_found"
    KEYS_UNAVAILABLE = "keys_unavailable"
    SIGNATURE_INVALID = "signature_invalid"
    CLAIM_INVALID = "claim_invalid"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_NOT_YET_VALID = "token_not_yet_valid"
    TOKEN_ISSUED_IN_FUTURE = "token_issued_in_future"
    LIFETIME_EXCEEDED = "lifetime_exceeded"
    AUDIENCE_MISMATCH = "audience_mismatch"
    # The token is not the kind its issuer's `requiredClaims` describe (an ID token at an API).
    REQUIRED_CLAIM_MISMATCH = "required_claim_mismatch"
    # A multi-tenant token whose tenant claim names another tenant than its `iss`.
    TENANT_MISMATCH = "tenant_mismatch"
    # The issuer's introspection endpoint says the token is not active (revoked, expired,
    # unknown to it): RFC 7662 2.2.
    TOKEN_INACTIVE = "token_inactive"
    # A TokenRevocation entry matches the token.
    TOKEN_REVOKED = "token_revoked"
    # 503: the introspection endpoint could not answer (failing, circuit open, too slow).
    INTROSPECTION_UNAVAILABLE = "introspection_unavailable"
    # 401 invalid_dpop_proof: the DPoP proof (RFC 9449 section 4.3) is missing or fails a check.
    DPOP_PROOF_MISSING = "dpop_proof_missing"
    DPOP_PROOF_MALFORMED = "dpop_proof_malformed"
    DPOP_ALGORITHM_NOT_ALLOWED = "dpop_algorithm_not_allowed"
    DPOP_KEY_INVALID = "dpop_key_invalid"
    DPOP_SIGNATURE_INVALID = "dpop_signature_invalid"
    DPOP_METHOD_MISMATCH = "dpop_method_mismatch"
    DPOP_URI_MISMATCH = "dpop_uri_mismatch"
    DPOP_PROOF_EXPIRED = "dpop_proof_expired"
    DPOP_TOKEN_HASH_MISMATCH = "dpop_token_hash_mismatch"
    DPOP_PROOF_REPLAYED = "dpop_proof_replayed"
    # 401 use_dpop_nonce: the policy wants a server nonce in the proof (RFC 9449 section 9).
    DPOP_NONCE_REQUIRED = "dpop_nonce_required"
    # 401 invalid_token: the token's key binding (its `cnf` claim) does not hold.
    DPOP_KEY_MISMATCH = "dpop_key_mismatch"
    DPOP_REQUIRED = "dpop_required"
    DPOP_BOUND_AS_BEARER = "dpop_bound_as_bearer"
    CERTIFICATE_MISSING = "certificate_missing"
    CERTIFICATE_MISMATCH = "certificate_mismatch"
    # 403: a valid token without the permission the route needs.
    INSUFFICIENT_SCOPE = "insufficient_scope"
    INSUFFICIENT_ROLE = "insufficient_role"
    CLAIM_MISMATCH = "claim_mismatch"
    RULE_DENIED = "rule_denied"
    NO_POLICY = "no_policy"
    NO_RULE = "no_rule"
    # 403 by the HTTP transport: the proxy-to-authz shared secret was missing or wrong, so
    # the headers describing the original request cannot be trusted.
    PROXY_NOT_TRUSTED = "proxy_not_trusted"
    # 403 as Envoy's own status_on_error: a bug must fail closed, never open.
    INTERNAL_ERROR = "internal_error"
    # 503 by the HTTP transport: too many checks waiting; answered at once rather than queued.
    OVERLOADED = "overloaded"
    # 503: the shared DPoP replay cache did not answer in time; replay cannot be ruled out.
    DPOP_REPLAY_UNAVAILABLE = "dpop_replay_unavailable"
    # 503: the policy replaces the credential with an internal token and none can be signed.
    INTERNAL_TOKEN_UNAVAILABLE = "internal_token_unavailable"
    # Browser sign-in (a policy's `login`, issue 15). 302: a navigation without a session
    # is sent to the provider; the callback, having set the session, back to the page; the
    # logout path to the provider's end_session_endpoint.
    LOGIN_REQUIRED = "login_required"
    LOGIN_COMPLETED = "login_completed"
    LOGGED_OUT = "logged_out"
    # 400: a callback whose state is not the one this browser was sent with (tampered,
    # replayed, expired), or a return URL that is not allowed (no open redirects).
    LOGIN_STATE_INVALID = "login_state_invalid"
    REDIRECT_NOT_ALLOWED = "redirect_not_allowed"
    # 401: the provider refused the sign-in or the code; the ID token failed a check.
    LOGIN_FAILED = "login_failed"
    ID_TOKEN_INVALID = "id_token_invalid"
    # 401 invalid_token: the session cookie cannot be opened, or the session ended (idle or
    # absolute timeout, its tokens expired, a refused refresh, logged out).
    SESSION_INVALID = "session_invalid"
    SESSION_EXPIRED = "session_expired"
    # 403: a state-changing request authenticated by a session came from another origin.
    CSRF_REJECTED = "csrf_rejected"
    # 503: the provider (or the session store) did not answer within the wait: retry.
    PROVIDER_UNAVAILABLE = "provider_unavailable"


@dataclass(frozen=True, slots=True)
class Identity:
    """What a verified token says about its bearer, as the upstream will see it."""

    issuer: str
    subject: str | None
    claims: Mapping[str, Any]
    scopes: tuple[str, ...]
    roles: tuple[str, ...]
    kid: str | None


@record
class Decision:
    """An allow or a deny, with the reason and the policy and rule that produced it."""

    allowed: bool
    reason: Reason
    detail: str = ""
    policy: str | None = None
    rule: str | None = None
    identity: Identity | None = None
    required_scopes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BrowserStep:
    """What a browser is told beyond the decision (browser sign-in): where to go next
    (`location`, for a 302), cookies to set or clear (Set-Cookie values), when to retry
    (a 503), and whether it gets a page rather than a JSON error (a navigation)."""

    location: str | None = None
    cookies: tuple[str, ...] = ()
    retry_after: int | None = None
    page: bool = True
