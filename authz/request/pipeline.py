"""One Check, start to end: select policy -> match rule -> authenticate -> authorize -> respond.

Reads the snapshot once, so a swap mid-request cannot mix two policies, and does no I/O
of its own (a key wait is a bounded wait for a fetch running elsewhere). Transports hand
it a `RequestView` and render the `Answer`; `authz check` and `/debug/explain` use it too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import field, replace
from typing import Protocol

from authz.keys.signing import NoSigningKey
from authz.policy.deny import DenyResponse
from authz.policy.snapshot import Action, CompiledPolicy, CompiledRule, Snapshot
from authz.request.authenticate import Authenticator
from authz.request.authorize import authorize, rule_refuses
from authz.request.credentials import Authentication
from authz.request.decision import BrowserStep, Decision, Identity, Reason
from authz.request.internal_token import InternalTokens
from authz.request.nonces import Nonces
from authz.request.records import record
from authz.request.respond import Answer, Responder, http_status
from authz.request.verify import VerifiedToken, WouldWait

__all__ = ["Outcome", "Pipeline", "Serving", "WouldWait"]
from authz.request.view import RequestView

_MAX_DECIDED = 4096  # decisions kept for cached identities


@record
class Outcome:
    """A decision with what the response and the audit log need to know."""

    decision: Decision
    request: RequestView | None
    policy: CompiledPolicy | None
    authentication: Authentication | None = None
    snapshot_version: int = 0
    would_deny: Decision | None = None  # dry-run: the denial that was not enforced
    rule: CompiledRule | None = None  # the rule that matched (None: the default action)
    # allow: the internal token that replaces the credential upstream (never logged)
    internal_token: str | None = field(default=None, repr=False)
    step: BrowserStep | None = None  # browser sign-in: a redirect, cookies, a retry

    @property
    def verified(self) -> VerifiedToken | None:
        """The verified token behind the decision, if one was sent and verified."""
        return self.authentication.verified if self.authentication is not None else None


class Serving(Protocol):
    """Where the serving snapshot is read from (the policy store, or a test's fixed one)."""

    @property
    def snapshot(self) -> Snapshot: ...


class SignIn(Protocol):
    """Browser sign-in for policies with `login` (authz.request.login.flow): its own paths
    (callback, logout, login), and a denial turned into a redirect to the provider."""

    def endpoint(
        self, request: RequestView, policy: CompiledPolicy, *, may_wait: bool
    ) -> tuple[Decision, BrowserStep] | None: ...

    def challenge(
        self,
        request: RequestView,
        policy: CompiledPolicy,
        rule: CompiledRule | None,
        denied: Decision,
        authentication: Authentication | None,
        *,
        may_wait: bool,
    ) -> tuple[Decision, BrowserStep] | None: ...


class Pipeline:
    def __init__(
        self,
        serving: Serving,
        authenticator: Authenticator,
        *,
        realm: str = "authz",
        default_allow: bool = False,
        nonces: Nonces | None = None,
        internal_tokens: InternalTokens | None = None,
        clock: Callable[[], float] = time.time,
        sign_in: SignIn | None = None,
    ) -> None:
        self._serving = serving
        self._authenticator = authenticator
        self.responder = Responder(realm, nonces)
        self.default_allow = default_allow
        self.internal_tokens = internal_tokens
        self._clock = clock
        self._sign_in = sign_in
        self._decided: dict[
            tuple[int, int, int, int, str | None],
            tuple[CompiledRule, CompiledPolicy, Identity, VerifiedToken | None, Decision],
        ] = {}
        self._seen: Snapshot | None = None
        self._forget: list[Callable[[], None]] = [self._decided.clear, self.responder.forget]

    def on_snapshot_change(self, forget: Callable[[], None]) -> None:
        """Have `forget()` called when a Check reads another serving snapshot than the
        Check before: a memo that holds policy objects drops them with the snapshot
        that made them, instead of keeping old snapshots alive until it fills. (Driven by
        what Checks read, so any `Serving` works; a Check still on the old snapshot may
        store an entry after the change, which the next change drops.)"""
        self._forget.append(forget)

    def _snapshot_changed(self, snapshot: Snapshot) -> None:
        self._seen = snapshot
        for forget in self._forget:
            forget()

    def check(self, request: RequestView, *, may_wait: bool = True) -> tuple[Answer, Outcome]:
        """Decide and answer. `may_wait=False` (an event loop): raises WouldWait where deciding
        needs a bounded wait for a fetch running elsewhere; check again where waiting is cheap."""
        return self.respond(self.decide(request, may_wait=may_wait))

    def reject(self, reason: Reason, detail: str) -> tuple[Answer, Outcome]:
        """A request the transport could not turn into a view (400 request_invalid)."""
        return self.respond(Outcome(Decision(False, reason, detail), None, None))

    def respond(self, outcome: Outcome) -> tuple[Answer, Outcome]:
        decision = outcome.decision
        if outcome.step is not None:
            return self.responder.step(decision, outcome.step), outcome
        if not decision.allowed:
            custom = _deny_with(outcome)
            if custom is None:
                answer = self.responder.deny(decision, outcome.policy, outcome.authentication)
                return answer, outcome
            assert outcome.policy is not None  # custom answers come from a policy
            secret = tuple(s.name for s in outcome.policy.token_sources if s.kind == "query")
            answer = self.responder.deny(
                decision,
                outcome.policy,
                outcome.authentication,
                request=outcome.request,
                custom=custom,
                secret_params=secret,
            )
            return answer, outcome
        if outcome.policy is None:  # allowed by default: strip every identity header
            headers = self._serving.snapshot.identity_headers
            return self.responder.allow_unlisted(decision, headers), outcome
        assert outcome.request is not None  # only a rejected request has none, and is denied
        answer = self.responder.allow(
            decision,
            outcome.policy,
            outcome.request,
            outcome.authentication,
            outcome.internal_token,
        )
        return answer, outcome

    def decide(self, request: RequestView, *, may_wait: bool = True) -> Outcome:
        snapshot = self._serving.snapshot
        if snapshot is not self._seen:
            self._snapshot_changed(snapshot)
        version = snapshot.version
        policy = snapshot.select(request.host, request.context)
        if policy is None:
            reason = Reason.ALLOWED_BY_DEFAULT if self.default_allow else Reason.NO_POLICY
            return Outcome(Decision(self.default_allow, reason), request, None, None, version)
        sign_in = self._sign_in if policy.login is not None else None
        if sign_in is not None:
            handled = sign_in.endpoint(request, policy, may_wait=may_wait)
            if handled is not None:
                return Outcome(handled[0], request, policy, None, version, step=handled[1])
        rule = policy.rule_for(request)
        action = rule.action if rule is not None else policy.default_action
        rule_name = rule.name if rule is not None else "(default)"
        authentication = None
        if action == "deny":
            reason = Reason.RULE_DENIED if rule is not None else Reason.NO_RULE
            decision = Decision(False, reason, "", policy.id, rule_name)
        else:
            authentication = self._authenticator.authenticate(
                request, policy, may_wait=may_wait, revocations=snapshot.revocations
            )
            decision = self._authorize(action, rule, rule_name, policy, authentication)
        if not decision.allowed and policy.dry_run:
            return self._dry_run(
                decision,
                request=request,
                policy=policy,
                authentication=authentication,
                version=version,
                may_wait=may_wait,
                rule=rule,
                snapshot=snapshot,
            )
        if not decision.allowed and sign_in is not None:
            handled = sign_in.challenge(
                request, policy, rule, decision, authentication, may_wait=may_wait
            )
            if handled is not None:
                return Outcome(
                    handled[0], request, policy, authentication, version, rule=rule, step=handled[1]
                )
        return self._internal_token(
            Outcome(decision, request, policy, authentication, version, rule=rule)
        )

    def _authorize(
        self,
        action: Action,
        rule: CompiledRule | None,
        rule_name: str,
        policy: CompiledPolicy,
        authentication: Authentication | None,
    ) -> Decision:
        """`_authorize`, kept for a cached identity: unless a claim condition of the rule
        reads the time (`maxAgeSeconds`), the decision is a function of the rule, the policy,
        the identity, the verified token (the rule's issuers and audiences) and how the
        credential was bound, all immutable (bounded; emptied when full or when another
        snapshot serves). The rule's request conditions were evaluated when the rule was
        chosen."""
        clock = self._clock
        if rule is None or authentication is None or not authentication.reused:
            return _authorize(action, rule, rule_name, policy, authentication, clock=clock)
        who = authentication.identity
        if who is None:
            return _authorize(action, rule, rule_name, policy, authentication, clock=clock)
        verified = authentication.verified
        # The entry holds rule, policy, identity and token: their ids cannot be reused meanwhile.
        key = (id(rule), id(policy), id(who), id(verified), authentication.binding)
        kept = self._decided.get(key)
        if (
            kept is not None
            and kept[0] is rule
            and kept[1] is policy
            and kept[2] is who
            and kept[3] is verified
        ):
            return kept[4]
        decision = _authorize(action, rule, rule_name, policy, authentication, clock=clock)
        if not rule.timed:
            if len(self._decided) >= _MAX_DECIDED:
                self._decided.clear()
            self._decided[key] = (rule, policy, who, verified, decision)
        return decision

    def _internal_token(self, outcome: Outcome) -> Outcome:
        """An allowed request of a policy with `internalToken` carries one upstream; none can
        be signed (no key loaded): the request is refused (503), never sent on without it.
        A pipeline without a minter (an explanation) says what is decided and mints nothing."""
        policy, auth, minter = outcome.policy, outcome.authentication, self.internal_tokens
        spec = policy.internal_token if policy is not None else None
        if spec is None or auth is None or auth.identity is None or minter is None:
            return outcome
        if not outcome.decision.allowed:
            return outcome
        assert policy is not None
        try:
            token = minter.mint(auth, policy.id, spec)
        except NoSigningKey as exc:
            denied = Decision(
                False,
                Reason.INTERNAL_TOKEN_UNAVAILABLE,
                str(exc)[:200],
                policy.id,
                outcome.decision.rule,
                auth.identity,
            )
            return replace(outcome, decision=denied)
        return replace(outcome, internal_token=token)

    def _dry_run(
        self,
        denied: Decision,
        *,
        request: RequestView,
        policy: CompiledPolicy,
        authentication: Authentication | None,
        version: int,
        may_wait: bool,
        rule: CompiledRule | None,
        snapshot: Snapshot,
    ) -> Outcome:
        """Allow what a dry-run policy would deny. Identity headers come from the credential
        only when it is valid for the policy; a denial by rule was decided before any
        credential was read, so it is authenticated here."""
        if authentication is None and denied.identity is None:
            authentication = self._authenticator.authenticate(
                request, policy, may_wait=may_wait, revocations=snapshot.revocations
            )
        who = denied.identity or (authentication.identity if authentication else None)
        decision = Decision(
            True, Reason.ALLOWED_DRY_RUN, denied.detail, policy.id, denied.rule, who
        )
        outcome = Outcome(
            decision, request, policy, authentication, version, would_deny=denied, rule=rule
        )
        if who is None or authentication is None or authentication.identity is not who:
            return outcome
        minted = self._internal_token(outcome)
        return outcome if not minted.decision.allowed else minted


def _deny_with(outcome: Outcome) -> DenyResponse | None:
    """The custom answer for a denial: the matched rule's, else its policy's (denyWith)."""
    status = http_status(outcome.decision)
    for owner in (outcome.rule, outcome.policy):
        if owner is not None and owner.deny_with is not None:
            custom = owner.deny_with.for_status(status)
            if custom is not None:
                return custom
    return None


def _authorize(
    action: Action,
    rule: CompiledRule | None,
    rule_name: str,
    policy: CompiledPolicy,
    authentication: Authentication | None,
    *,
    clock: Callable[[], float],
) -> Decision:
    if authentication is None:
        if action == "allowAnonymous":
            return Decision(True, Reason.ALLOWED_ANONYMOUS, "", policy.id, rule_name)
        return Decision(False, Reason.TOKEN_MISSING, "", policy.id, rule_name)
    who = authentication.identity
    if who is None:
        failure = authentication.failure
        assert failure is not None
        return Decision(False, failure.reason, failure.detail, policy.id, rule_name)
    if rule is not None and (rule.issuers is not None or rule.audiences is not None):
        refused = rule_refuses(rule, authentication)
        if refused is not None:
            return Decision(False, refused.reason, refused.detail, policy.id, rule_name)
    if rule is not None and rule.require_dpop and authentication.binding != "dpop":
        detail = "the rule requires a DPoP-bound token with a proof"
        return Decision(False, Reason.DPOP_REQUIRED, detail, policy.id, rule_name, who)
    if rule is None or action == "allowAnonymous":
        reason = Reason.ALLOWED if action == "requireToken" else Reason.ALLOWED_ANONYMOUS
        return Decision(True, reason, "", policy.id, rule_name, who)
    return authorize(rule, policy, who, clock())
