"""A verified identity + the matched rule -> allow, or what is missing (403)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from authz.policy.snapshot import ClaimCondition, CompiledPolicy, CompiledRule
from authz.request.claims import MISSING, claim, scalar_text
from authz.request.decision import Decision, Identity, Reason


def _condition_holds(cond: ClaimCondition, claims: Mapping[str, Any]) -> bool:
    value = claim(claims, cond.path)
    if cond.op == "present":
        return (value is not MISSING) == cond.present
    if value is MISSING:
        return False
    items = value if isinstance(value, list) else [value]
    for item in items:
        text = scalar_text(item)
        if text is None:
            continue
        if cond.op == "regex":
            assert cond.pattern is not None
            if cond.pattern.fullmatch(text):
                return True
        elif text in cond.values:
            return True
    return False


def authorize(rule: CompiledRule, policy: CompiledPolicy, who: Identity) -> Decision:
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
        if not _condition_holds(cond, who.claims):
            return Decision(
                False,
                Reason.CLAIM_MISMATCH,
                f"claim condition failed: {cond.text}",
                policy.id,
                rule.name,
                who,
            )
    return Decision(True, Reason.ALLOWED, "", policy.id, rule.name, who)
