"""Decision -> Answer: the only place HTTP statuses, challenges and identity headers are chosen.

RFC 6750 section 3: no credentials -> 401 with a bare Bearer challenge; bad
credentials -> 401 `invalid_token`; valid but not enough -> 403
`insufficient_scope` with the scopes needed; malformed -> 400
`invalid_request`. An `Answer` is wire-neutral: each transport renders it (gRPC
CheckResponse, HTTP response). Denials are built once and reused; the token is never echoed.
"""

from __future__ import annotations

import html
import json
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from authz.policy.deny import DenyResponse
from authz.policy.issuer import TokenSource
from authz.policy.snapshot import CompiledPolicy
from authz.request.claims import claim, scalar_text
from authz.request.credentials import Authentication
from authz.request.credentials.dpop import PROOF_HEADER
from authz.request.credentials.dpop import SOURCE as DPOP_SOURCE
from authz.request.decision import BrowserStep, Decision, Identity, Reason
from authz.request.extract import unverified_carriers, without_cookie
from authz.request.login.cookies import chunk_names
from authz.request.nonces import Nonces
from authz.request.view import RequestView

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
    Reason.REQUIRED_CLAIM_MISMATCH: (401, "invalid_token", "the token is not of the accepted kind"),
    Reason.TENANT_MISMATCH: (401, "invalid_token", "the token tenant does not match its issuer"),
    Reason.TOKEN_INACTIVE: (401, "invalid_token", "the token is not active"),
    Reason.TOKEN_REVOKED: (401, "invalid_token", "the token has been revoked"),
    # RFC 6749 4.1.2.1's code for a server that cannot answer now; no challenge: the
    # credentials may be fine, so the client should retry rather than re-authenticate.
    Reason.INTROSPECTION_UNAVAILABLE: (
        503,
        "temporarily_unavailable",
        "the token could not be checked; try again",
    ),
    Reason.DPOP_PROOF_MISSING: (401, "invalid_dpop_proof", "a DPoP proof is required"),
    Reason.DPOP_PROOF_MALFORMED: (401, "invalid_dpop_proof", "the DPoP proof is malformed"),
    Reason.DPOP_ALGORITHM_NOT_ALLOWED: (
        401,
        "invalid_dpop_proof",
        "the DPoP proof algorithm is not accepted",
    ),
    Reason.DPOP_KEY_INVALID: (401, "invalid_dpop_proof", "the DPoP proof key is not acceptable"),
    Reason.DPOP_SIGNATURE_INVALID: (
        401,
        "invalid_dpop_proof",
        "the DPoP proof signature is invalid",
    ),
    Reason.DPOP_METHOD_MISMATCH: (
        401,
        "invalid_dpop_proof",
        "the DPoP proof is for another method",
    ),
    Reason.DPOP_URI_MISMATCH: (401, "invalid_dpop_proof", "the DPoP proof is for another URI"),
    Reason.DPOP_PROOF_EXPIRED: (401, "invalid_dpop_proof", "the DPoP proof is not fresh"),
    Reason.DPOP_TOKEN_HASH_MISMATCH: (
        401,
        "invalid_dpop_proof",
        "the DPoP proof is for another token",
    ),
    Reason.DPOP_PROOF_REPLAYED: (401, "invalid_dpop_proof", "the DPoP proof was used before"),
    Reason.DPOP_NONCE_REQUIRED: (401, "use_dpop_nonce", "the DPoP proof needs the server nonce"),
    Reason.DPOP_KEY_MISMATCH: (401, "invalid_token", "the token is not bound to the proof key"),
    Reason.DPOP_REQUIRED: (401, "invalid_token", "a DPoP-bound token with a proof is required"),
    Reason.DPOP_BOUND_AS_BEARER: (
        401,
        "invalid_token",
        "a DPoP-bound token must be sent with the DPoP scheme and a proof",
    ),
    Reason.CERTIFICATE_MISSING: (
        401,
        "invalid_token",
        "the token is bound to a client certificate that was not presented",
    ),
    Reason.CERTIFICATE_MISMATCH: (
        401,
        "invalid_token",
        "the token is bound to another client certificate",
    ),
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
    Reason.DPOP_REPLAY_UNAVAILABLE: (
        503,
        "temporarily_unavailable",
        "the DPoP replay check is unavailable; retry later",
    ),
    Reason.INTERNAL_TOKEN_UNAVAILABLE: (
        503,
        "temporarily_unavailable",
        "the internal token cannot be issued; retry later",
    ),
    Reason.LOGIN_REQUIRED: (302, None, "sign in first"),
    Reason.LOGIN_COMPLETED: (302, None, "signed in"),
    Reason.LOGGED_OUT: (302, None, "signed out"),
    Reason.LOGIN_STATE_INVALID: (400, "invalid_request", "the sign-in response is not valid"),
    Reason.REDIRECT_NOT_ALLOWED: (400, "invalid_request", "the return address is not allowed"),
    Reason.LOGIN_FAILED: (401, "invalid_token", "the sign-in failed"),
    Reason.ID_TOKEN_INVALID: (401, "invalid_token", "the sign-in failed"),
    Reason.SESSION_INVALID: (401, "invalid_token", "the session is not valid"),
    Reason.SESSION_EXPIRED: (401, "invalid_token", "the session has ended"),
    Reason.CSRF_REJECTED: (403, "access_denied", "cross-origin request refused"),
    Reason.PROVIDER_UNAVAILABLE: (
        503,
        "temporarily_unavailable",
        "the sign-in provider did not answer in time; retry",
    ),
}
# Denials about the proof itself: their challenge is a DPoP one (RFC 9449 section 7.1).
DPOP_REASONS = frozenset(
    {
        reason
        for reason, (_, error, _) in OUTCOMES.items()
        if error in ("invalid_dpop_proof", "use_dpop_nonce")
    }
    | {Reason.DPOP_KEY_MISMATCH, Reason.DPOP_REQUIRED, Reason.DPOP_BOUND_AS_BEARER}
)


Metadata = tuple[tuple[str, str | tuple[str, ...]], ...]


@dataclass(frozen=True, slots=True)
class Answer:
    """What the proxy is to do, in no wire format.

    Allow (status 200): set `headers` on the upstream request, remove `remove` from it, and
    pass `metadata` (issuer, subject, policy, rule, scopes) to later filters, and drop the
    `remove_query` parameters (a token sent in the query string). Deny: answer
    the client with `status`, `headers` (content type, challenge) and `body`. A `shared`
    answer is reused for many requests, so a transport may keep its rendering too.
    """

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()
    body: str = ""
    metadata: Metadata = ()
    remove_query: tuple[str, ...] = ()  # allow: query parameters removed upstream
    # allow: headers for the client's response (Set-Cookie of a renewed session)
    response_headers: tuple[tuple[str, str], ...] = ()
    shared: bool = field(default=False, compare=False)

    @property
    def allowed(self) -> bool:
        return self.status == 200


def http_status(decision: Decision) -> int:
    return 200 if decision.allowed else OUTCOMES[decision.reason][0]


def challenge(
    reason: Reason,
    realm: str,
    scopes: tuple[str, ...] = (),
    *,
    dpop_algs: str | None = None,
    dpop_presented: bool = False,
) -> str | None:
    """The WWW-Authenticate value for a denial, or None when the denial is not about the
    credential (403 by rule, 503: overloaded, an introspection endpoint, a DPoP replay check
    or an internal token that cannot be had; a 302: browser sign-in's redirects). `dpop_algs`
    (a policy that reads DPoP): a failure of a DPoP-presented credential or of a proof gets
    a DPoP challenge with `algs`; any other gets the Bearer challenge followed by a bare
    DPoP one, offering both (RFC 9449 7.1)."""
    status, error, description = OUTCOMES[reason]
    if error == "access_denied" or status < 400 or status >= 500:
        return None
    params = [f'realm="{realm}"']
    if error is not None:
        params.append(f'error="{error}"')
        params.append(f'error_description="{description}"')
    if scopes and status == 403:
        params.append(f'scope="{" ".join(scopes)}"')
    if dpop_algs is None:
        return "Bearer " + ", ".join(params)
    if dpop_presented or reason in DPOP_REASONS:
        return "DPoP " + ", ".join([*params, f'algs="{dpop_algs}"'])
    return f'Bearer {", ".join(params)}, DPoP realm="{realm}", algs="{dpop_algs}"'


# Bounds on the memos below: denials vary only by policy-defined scope sets; allow answers
# by cached identity, so that memo is simply emptied when full. Those holding policy
# objects are also emptied when another snapshot serves (`Responder.forget`).
_MAX_DENIALS = 4096
_MAX_ALLOWED = 4096
_AllowKey = tuple[int, str, str | None, str | None, int, tuple[str, ...]]
_DenyKey = tuple[Reason, tuple[str, ...], str | None, bool]
NONCE_HEADER = "dpop-nonce"


class Responder:
    """Builds Answers. Answers are immutable, so they are memoised: denials per (reason,
    scopes), allow answers per (cached identity, policy, rule, credential place), which makes a
    cache-hit Check reuse the answer (and the transport its rendering) instead of
    rebuilding identity headers from claims every time."""

    def __init__(self, realm: str, nonces: Nonces | None = None) -> None:
        self.realm = realm
        self.nonces = nonces
        self._denials: dict[_DenyKey, Answer] = {}
        self._custom: dict[tuple[int, _DenyKey], tuple[DenyResponse, Answer]] = {}
        self._allowed: dict[
            _AllowKey, tuple[Identity, CompiledPolicy, TokenSource | None, Answer]
        ] = {}
        self._unlisted: Answer | None = None

    def forget(self) -> None:
        """Drop the memos that hold policy objects (another snapshot serves)."""
        self._custom.clear()
        self._allowed.clear()

    def deny(
        self,
        decision: Decision,
        policy: CompiledPolicy | None = None,
        auth: Authentication | None = None,
        *,
        request: RequestView | None = None,
        custom: DenyResponse | None = None,
        secret_params: tuple[str, ...] = (),
    ) -> Answer:
        """A denial; under a policy that reads DPoP its challenge says so, and a missing
        server nonce comes with a fresh one (`DPoP-Nonce`), which is why those are not kept.
        A policy's `custom` answer (denyWith) replaces it: one that redirects with the
        original URL depends on the request, others are kept like authz's own."""
        algs = policy.dpop.algs if policy is not None and policy.dpop is not None else None
        presented = auth is not None and auth.source == DPOP_SOURCE
        key = (decision.reason, decision.required_scopes, algs, presented)
        nonce_needed = decision.reason == Reason.DPOP_NONCE_REQUIRED and self.nonces is not None
        if custom is not None:
            if nonce_needed or (custom.original is not None and request is not None):
                return self._custom_denial(key, custom, request, secret_params)
            memo = self._custom.get((id(custom), key))
            if memo is not None and memo[0] is custom:
                return memo[1]
            made = self._custom_denial(key, custom, None, ())
            if len(self._custom) >= _MAX_DENIALS:
                self._custom.clear()
            self._custom[(id(custom), key)] = (custom, made)
            return made
        if nonce_needed:
            assert self.nonces is not None
            denial = self._denial(*key)
            nonce = (NONCE_HEADER, self.nonces.current())
            return Answer(denial.status, denial.reason, (*denial.headers, nonce), body=denial.body)
        answer = self._denials.get(key)
        if answer is None:
            answer = self._denial(*key)
            if len(self._denials) < _MAX_DENIALS:
                self._denials[key] = answer
        return answer

    def _custom_denial(
        self,
        key: _DenyKey,
        custom: DenyResponse,
        request: RequestView | None,
        secret_params: tuple[str, ...],
    ) -> Answer:
        """A denyWith answer: its status, headers and body; authz's own challenge (and a
        DPoP nonce) stays unless the policy sets `www-authenticate` itself. The reason code
        is authz's own."""
        default = self._denial(*key)
        headers = list(custom.headers)
        named = {name for name, _ in headers}
        for name, value in default.headers:
            if name == "www-authenticate" and not custom.overrides_challenge:
                headers.append((name, value))
        if key[0] == Reason.DPOP_NONCE_REQUIRED and self.nonces is not None:
            headers.append((NONCE_HEADER, self.nonces.current()))
        if custom.redirect is not None and "location" not in named:
            location = custom.redirect
            if custom.original is not None and request is not None:
                query = urllib.parse.urlencode(
                    {custom.original: original_url(request, secret_params)}
                )
                location += ("&" if "?" in location else "?") + query
            headers.append(("location", location))
        if custom.body is not None:
            body = custom.body
            if "content-type" not in named:
                headers.append(("content-type", "text/plain; charset=utf-8"))
        elif custom.redirect is not None:
            body = ""
        else:
            body = default.body
            if "content-type" not in named:
                headers.append(("content-type", "application/json"))
        status = custom.status or default.status
        shared = request is None and key[0] != Reason.DPOP_NONCE_REQUIRED
        return Answer(status, default.reason, tuple(headers), body=body, shared=shared)

    def _denial(
        self, reason: Reason, scopes: tuple[str, ...], algs: str | None, presented: bool
    ) -> Answer:
        status, error, description = OUTCOMES[reason]
        headers = [("content-type", "application/json")]
        value = challenge(reason, self.realm, scopes, dpop_algs=algs, dpop_presented=presented)
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
        policy: CompiledPolicy,
        request: RequestView,
        auth: Authentication | None,
        internal_token: str | None = None,
    ) -> Answer:
        """Allow with identity headers. A cached identity's answer is kept for the next
        request (a fresh identity's is not: keeping it would only load the GC), unless it
        depends on the request beyond the credential (a stripped cookie, an internal token
        that expires)."""
        who = decision.identity
        source = auth.source if auth is not None else None
        unverified = unverified_carriers(request, policy.token_sources, source)
        cookie = source is not None and source.kind == "cookie"
        if auth is not None and auth.cookies:  # a renewed session: this request's own answer
            answer = self._allow(
                decision, policy, request, source, unverified, internal_token=internal_token
            )
            return replace(answer, response_headers=tuple(("set-cookie", c) for c in auth.cookies))
        strip = policy.response.strip_authorization or policy.internal_token is not None
        if (
            who is None
            or auth is None
            or not auth.reused
            or (cookie and strip)
            or policy.internal_token is not None
        ):
            return self._allow(
                decision, policy, request, source, unverified, internal_token=internal_token
            )
        # The memo holds `who` and `source`, so their ids cannot be reused while the entry
        # lives (a source's own hash is a Python method). The reason is a StrEnum: the
        # member hashes and compares as its value.
        key = (id(who), decision.reason, decision.policy, decision.rule, id(source), unverified)
        memo = self._allowed.get(key)
        if memo is not None and memo[0] is who and memo[1] is policy and memo[2] is source:
            return memo[3]
        answer = self._allow(decision, policy, request, source, unverified, shared=True)
        if len(self._allowed) >= _MAX_ALLOWED:
            self._allowed.clear()
        self._allowed[key] = (who, policy, source, answer)
        return answer

    def step(self, decision: Decision, step: BrowserStep) -> Answer:
        """A denial that also tells a browser what to do: a redirect (sign-in, its callback,
        logout), cookies to set or clear, a page that retries. Never shared: the location
        and cookies are this request's. A navigation gets a small HTML page; a script the
        JSON denial with its challenge."""
        status, _error, description = OUTCOMES[decision.reason]
        headers: list[tuple[str, str]] = []
        if step.location is not None:
            headers.append(("location", step.location))
        headers.extend(("set-cookie", c) for c in step.cookies)
        headers.append(("cache-control", "no-store"))
        if step.retry_after is not None:
            headers.append(("retry-after", str(step.retry_after)))
        if not step.page:
            denial = self.deny(decision)
            return Answer(status, denial.reason, (*denial.headers, *headers), body=denial.body)
        headers.insert(0, ("content-type", "text/html; charset=utf-8"))
        return Answer(status, decision.reason.value, tuple(headers), body=_page(description, step))

    def allow_unlisted(self, decision: Decision, identity_headers: tuple[str, ...]) -> Answer:
        """Allowed by default (no policy covers the request): no identity, and none of the
        identity headers any policy sets reaches the upstream as the client sent it."""
        answer = self._unlisted
        if answer is None or answer.remove != identity_headers:
            answer = Answer(200, decision.reason.value, remove=identity_headers, shared=True)
            self._unlisted = answer
        return answer

    def _allow(
        self,
        decision: Decision,
        policy: CompiledPolicy,
        request: RequestView,
        source: TokenSource | None,
        unverified: tuple[str, ...],
        *,
        shared: bool = False,
        internal_token: str | None = None,
    ) -> Answer:
        """Every configured identity header is either set or removed, so a client cannot
        smuggle its own `x-auth-subject` to the upstream; a credential authz did not verify
        (`unverified`) never reaches the upstream as if it had been (issue 11, item 6).
        An internal token replaces the credential: the credential (and a DPoP proof) is
        removed, and the internal token's header is set, or removed when there is none."""
        headers: list[tuple[str, str]] = []
        remove: list[str] = list(unverified)
        remove_query: tuple[str, ...] = ()
        who = decision.identity
        for spec in policy.response.headers:
            value = None
            if who is not None:
                value = _header_value(spec.claim, who.scopes, who.roles, who.claims)
            if value is None:
                remove.append(spec.name)
            else:
                headers.append((spec.name, value))
        internal = policy.internal_token
        if internal is not None:
            if internal_token is not None:
                headers.append((internal.header, internal.value_prefix + internal_token))
            else:
                remove.append(internal.header)
        strip = policy.response.strip_authorization or internal is not None
        if strip and source == DPOP_SOURCE:
            remove.append(PROOF_HEADER)
        if strip and source is not None:
            if source.kind == "header":
                if internal is None or internal_token is None or source.name != internal.header:
                    remove.append(source.name)
            elif source.kind == "query":
                remove_query = (source.name,)
            else:
                rest = request.headers.get("cookie", "")
                for name in _cookie_parts(policy, source.name):
                    rest = without_cookie(rest, name)
                if rest:
                    headers.append(("cookie", rest))
                else:
                    remove.append("cookie")
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
            remove_query=remove_query,
            shared=shared,
        )


def original_url(request: RequestView, secret_params: tuple[str, ...] = ()) -> str:
    """The URL the client asked for, for a redirect to come back to: scheme, host and the
    path with its query, less the query parameters that carry tokens (`secret_params`)."""
    scheme = request.connection.scheme or request.headers.get("x-forwarded-proto") or "https"
    target = request.raw_path
    if secret_params and "?" in target:
        path, _, query = target.partition("?")
        kept = [
            (k, v)
            for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True)
            if k not in secret_params
        ]
        target = path + ("?" + urllib.parse.urlencode(kept) if kept else "")
    return f"{scheme}://{request.host}{target}"


def _cookie_parts(policy: CompiledPolicy, name: str) -> tuple[str, ...]:
    """The cookies a credential came in: a session continues in `<name>.1`, ..."""
    if policy.login is not None and name == policy.login.session.cookie:
        return chunk_names(name)
    return (name,)


def _page(description: str, step: BrowserStep) -> str:
    """A minimal page for a browser: a link to where it is sent, or a retry after a pause.
    Nothing from the request is echoed but the location, which authz built."""
    text = html.escape(description[:1].upper() + description[1:])
    if step.location is not None:
        link = html.escape(step.location, quote=True)
        return f'<!doctype html><title>{text}</title><p>{text}: <a href="{link}">continue</a></p>'
    if step.retry_after is not None:
        refresh = f'<meta http-equiv="refresh" content="{step.retry_after}">'
        return f"<!doctype html>{refresh}<title>{text}</title><p>{text}.</p>"
    return f"<!doctype html><title>{text}</title><p>{text}.</p>"


def _header_value(
    path: object, scopes: Iterable[str], roles: Iterable[str], claims: object
) -> str | None:
    """An identity header's value, in a format no upstream can misread (issue 11, item 7):
    `$scopes` is space-separated like OAuth's scope parameter, with only valid RFC 6749
    scope tokens; `$roles` and array claims are comma-separated, and an element that holds
    a comma, a control or line-separator character is left out rather than read as two."""
    if path == "$scopes":
        return _safe(" ".join(s for s in scopes if _SCOPE_TOKEN.fullmatch(s)))
    if path == "$roles":
        return _listed(roles)
    assert isinstance(path, tuple) and isinstance(claims, dict)
    value = claim(claims, path)
    if isinstance(value, list):
        return _listed(t for t in map(scalar_text, value) if t is not None)
    text = scalar_text(value)
    return _safe(text) if text is not None else None


# RFC 6749 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
# Control characters (C0, DEL, C1) and the Unicode line and paragraph separators: a value
# carrying one could split a header, or a log line, in a reader that honours them.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _listed(elements: Iterable[str]) -> str | None:
    return _safe(",".join(e for e in elements if "," not in e and not _UNSAFE.search(e)))


def _safe(value: str) -> str | None:
    """Header values must not carry control characters (a token could try header injection)."""
    if not value or _UNSAFE.search(value) is not None:
        return None
    return value
