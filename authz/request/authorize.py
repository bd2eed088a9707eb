"""A verified identity + the matched rule -> allow, or what is missing (403); and whether
the credential is one the rule accepts at all (its issuers and audiences: 401 if not)."""

from __future__ import annotations

from authz.policy.snapshot import CompiledPolicy, CompiledRule
from authz.request.credentials import Authentication
from authz.request.decision import Decision, Identity, Reason
from authz.request.jose import TokenError


def rule_refuses(rule: CompiledRule, authentication: Authentication) -> TokenError | None:
    """Why a valid credential is not one for this rule: a rule that narrows the policy's
    issuers or audiences treats a token from elsewhere as an untrusted issuer's (401
    invalid_token), not as a missing permission. A credential that is not a verified token
    cannot show either, so it is refused."""
    verified = authentication.verified
    if verified is None:
        return TokenError(Reason.ISSUER_NOT_TRUSTED, "this rule accepts only listed issuers")
    if rule.issuers is not None and verified.issuer.id not in rule.issuers:
        return TokenError(Reason.ISSUER_NOT_TRUSTED, "issuer is not accepted by this rule")
    if rule.audiences is not None:
        value = verified.claims.get(verified.issuer.audience_claim)
        names = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        if rule.audiences.isdisjoint(n for n in names if isinstance(n, str)):
            return TokenError(Reason.AUDIENCE_MISMATCH, "token audience not accepted by this rule")
    return None


def authorize(rule: CompiledRule, policy: CompiledPolicy, who: Identity, now: float) -> Decision:
    """Requirements of a requireToken rule against a verified identity."""
    if rule.scopes and not rule.scopes.satisfied_by(who.scopes):
        return Decision(
            False,
            Reason.INSUFFICIENT_SCOPE,
            "token lacks a required scope",
            policy.id,
            rule.name,
            who,
            rule.scopes.describe(),
        )
    if rule.roles and not rule.roles.satisfied_by(who.roles):
        return Decision(
            False,
            Reason.INSUFFICIENT_ROLE,
            "token lacks a required role",
            policy.id,
            rule.name,
            who,
        )
    for cond in rule.claims:
        if not cond.holds(who.claims, now):
            return Decision(
                False,
                Reason.CLAIM_MISMATCH,
                f"claim condition failed: {cond.text}",
                policy.id,
                rule.name,
                who,
            )
    return Decision(True, Reason.ALLOWED, "", policy.id, rule.name, who)
