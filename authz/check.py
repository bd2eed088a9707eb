"""One Check, start to end: select policy -> match rule -> extract -> verify -> authorize.

Reads `store.snapshot` once, so a swap mid-request cannot mix two policies,
and does no I/O. `decide` is shared by the gRPC server and `authz check`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from envoy.service.auth.v3.external_auth_pb2 import CheckResponse

from authz.decision import Decision, Reason
from authz.policy.snapshot import CompiledPolicy
from authz.policy.store import PolicyStore
from authz.request.authorize import authorize, check_audience, identity
from authz.request.cache import TokenCache
from authz.request.extract import HttpRequest, RequestError, extract_token, http_request
from authz.request.jose import TokenError
from authz.request.respond import Responder
from authz.request.verify import VerifiedToken, verify


@dataclass(frozen=True, slots=True)
class Outcome:
    """A decision with what the response and the audit log need to know."""

    decision: Decision
    request: HttpRequest | None
    policy: CompiledPolicy | None
    token_header: str | None = None  # the header the token came in, for stripAuthorization
    verified: VerifiedToken | None = None
    snapshot_version: int = 0
    would_deny: Decision | None = None  # dry-run: the denial that was not enforced


class Checker:
    def __init__(
        self,
        store: PolicyStore,
        *,
        realm: str = "authz",
        default_allow: bool = False,
        cache: TokenCache | None = None,
        max_token_bytes: int = 16384,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.responder = Responder(realm)
        self.default_allow = default_allow
        self.cache = cache if cache is not None else TokenCache()
        self.max_token_bytes = max_token_bytes
        self.clock = clock
        store.on_swap(lambda _snapshot: self.cache.clear())
        store.keys.on_change(self.cache.drop_issuer)

    def check(self, check_request: Any) -> tuple[CheckResponse, Outcome]:
        try:
            request = http_request(check_request)
        except RequestError as exc:
            decision = Decision(False, Reason.REQUEST_INVALID, str(exc))
            return self.responder.deny(decision), Outcome(decision, None, None)
        outcome = self.decide(request)
        if not outcome.decision.allowed and outcome.policy and outcome.policy.dry_run:
            outcome = self._dry_run(outcome)
        if outcome.decision.allowed:
            response = self.responder.allow(outcome.decision, outcome.policy, outcome.token_header)
        else:
            response = self.responder.deny(outcome.decision)
        return response, outcome

    def decide(self, request: HttpRequest) -> Outcome:
        snapshot = self.store.snapshot
        version = snapshot.version
        policy = snapshot.select(request.host, request.context)
        if policy is None:
            reason = Reason.ALLOWED_BY_DEFAULT if self.default_allow else Reason.NO_POLICY
            return Outcome(
                Decision(self.default_allow, reason), request, None, snapshot_version=version
            )
        rule = policy.rule_for(request.method, request.host, request.path)
        action = rule.action if rule is not None else policy.default_action
        rule_name = rule.name if rule is not None else "(default)"
        if action == "deny":
            reason = Reason.RULE_DENIED if rule is not None else Reason.NO_RULE
            return Outcome(
                Decision(False, reason, "", policy.id, rule_name),
                request,
                policy,
                snapshot_version=version,
            )
        try:
            found = extract_token(request, policy.token_sources)
        except TokenError as exc:
            decision = Decision(False, exc.reason, exc.detail, policy.id, rule_name)
            return Outcome(decision, request, policy, snapshot_version=version)
        if found is None:
            if action == "allowAnonymous":
                decision = Decision(True, Reason.ALLOWED_ANONYMOUS, "", policy.id, rule_name)
            else:
                decision = Decision(False, Reason.TOKEN_MISSING, "", policy.id, rule_name)
            return Outcome(decision, request, policy, snapshot_version=version)
        token, source = found
        token_header = source.name if source.kind == "header" else None
        verified = None
        try:
            verified = self._verify(token, policy)
            if source not in verified.issuer.token_sources:
                raise TokenError(
                    Reason.SOURCE_NOT_ALLOWED, f"{source.label} is not a source of this issuer"
                )
            check_audience(verified, policy)
        except TokenError as exc:
            decision = Decision(False, exc.reason, exc.detail, policy.id, rule_name)
            return Outcome(decision, request, policy, token_header, verified, version)
        who = identity(verified)
        if rule is None or action == "allowAnonymous":
            reason = Reason.ALLOWED if action == "requireToken" else Reason.ALLOWED_ANONYMOUS
            decision = Decision(True, reason, "", policy.id, rule_name, who)
        else:
            decision = authorize(rule, policy, who)
        return Outcome(decision, request, policy, token_header, verified, version)

    def _dry_run(self, outcome: Outcome) -> Outcome:
        """Allow what a dry-run policy would deny. Identity headers come from the token only
        when it is valid for the policy: a denial by rule was decided before the token was
        read, so it is verified here; a token that fails verification gives none."""
        denied, policy, request = outcome.decision, outcome.policy, outcome.request
        assert policy is not None and request is not None
        who, token_header, verified = denied.identity, outcome.token_header, outcome.verified
        if who is None and verified is None:
            try:
                found = extract_token(request, policy.token_sources)
                if found is not None:
                    token, source = found
                    token_header = source.name if source.kind == "header" else None
                    verified = self._verify(token, policy)
                    if source in verified.issuer.token_sources:
                        check_audience(verified, policy)
                        who = identity(verified)
            except TokenError:
                who = None
        decision = Decision(
            True, Reason.ALLOWED_DRY_RUN, denied.detail, policy.id, denied.rule, who
        )
        return Outcome(
            decision,
            request,
            policy,
            token_header,
            verified,
            outcome.snapshot_version,
            would_deny=denied,
        )

    def _verify(self, token: str, policy: CompiledPolicy) -> VerifiedToken:
        """Cache first; a cached token counts only if this policy trusts the very issuer
        object that verified it (two namespaces may declare the same `iss`) and that
        issuer still has the very key set it verified against (keys may have rotated
        while it was being verified, after the cache dropped the issuer's entries)."""
        now = self.clock()
        if len(token) > self.max_token_bytes:
            raise TokenError(
                Reason.TOKEN_TOO_LARGE, f"token longer than {self.max_token_bytes} bytes"
            )
        digest = TokenCache.digest(token)
        cached = self.cache.get(digest, now)
        if (
            cached is not None
            and policy.issuers_by_iss.get(cached.claims["iss"]) is cached.issuer
            and cached.issuer.keys.current() is cached.keys
        ):
            return cached
        verified = verify(token, policy.issuers_by_iss, now, self.max_token_bytes)
        self.cache.put(digest, verified, now)
        return verified
