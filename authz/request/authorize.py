"""Verified claims + the matched rule -> allow, or what is missing.

Audience is checked here, not in `verify`, because a policy may narrow the
issuer's audiences and verified tokens are cached across policies.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from authz.decision import Decision, Identity, Reason
from authz.policy.issuer import ClaimPath, CompiledIssuer
from authz.policy.snapshot import ClaimCondition, CompiledPolicy, CompiledRule
from authz.request.jose import TokenError
from authz.request.verify import VerifiedToken

_MISSING = object()


def claim(claims: Mapping[str, Any], path: ClaimPath) -> Any:
    """The value at a claim path, or _MISSING."""
    value: Any = claims
    for name in path:
        if not isinstance(value, dict):
            return _MISSING
        value = value.get(name, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


def _values(value: Any) -> Iterable[str]:
    """Scopes and roles arrive as a space-delimited string or an array of strings."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return (v for v in value if isinstance(v, str))
    return ()


def collect(claims: Mapping[str, Any], paths: tuple[ClaimPath, ...]) -> tuple[str, ...]:
    out: dict[str, None] = {}
    for path in paths:
        value = claim(claims, path)
        if value is not _MISSING:
            out.update(dict.fromkeys(_values(value)))
    return tuple(out)


def check_audience(token: VerifiedToken, policy: CompiledPolicy) -> None:
    """Any-of match. No audience configured: a token naming an audience is refused
    (it was meant for someone else); audience configured: the token must name one."""
    issuer = token.issuer
    accepted = policy.audiences if policy.audiences is not None else frozenset(issuer.audiences)
    value = token.claims.get(issuer.audience_claim, _MISSING)
    if value is _MISSING:
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


def scalar_text(value: Any) -> str | None:
    """Claim values compare as strings: JSON form for booleans and numbers."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float) and value is not None:
        return json.dumps(value)
    return None


def _condition_holds(cond: ClaimCondition, claims: Mapping[str, Any]) -> bool:
    value = claim(claims, cond.path)
    if cond.op == "present":
        return (value is not _MISSING) == cond.present
    if value is _MISSING:
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


def identity(token: VerifiedToken) -> Identity:
    issuer: CompiledIssuer = token.issuer
    sub = token.claims.get("sub")
    return Identity(
        issuer=issuer.issuer,
        subject=sub if isinstance(sub, str) else None,
        claims=token.claims,
        scopes=collect(token.claims, issuer.scope_claims),
        roles=collect(token.claims, issuer.role_claims),
        kid=token.kid,
    )


def authorize(rule: CompiledRule, policy: CompiledPolicy, who: Identity) -> Decision:
    """Requirements of a requireToken rule against a verified identity."""
    if rule.scopes and not rule.scopes.satisfied_by(frozenset(who.scopes)):
        return Decision(
            False,
            Reason.INSUFFICIENT_SCOPE,
            "token lacks a required scope",
            policy.id,
            rule.name,
            who,
            rule.scopes.describe(),
        )
    if rule.roles and not rule.roles.satisfied_by(frozenset(who.roles)):
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
