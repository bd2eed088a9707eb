"""A decision explained: what `authz check` prints and `/debug/explain` answers.

One function for both, so the offline CLI and the running server explain a request the
same way, through the same pipeline as a served Check. The output never contains the
token, only what was learnt from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from authz.introspection.introspector import IntrospectionState
from authz.policy.issuer import CompiledIssuer
from authz.request.credentials.route import introspecting_issuer
from authz.request.decision import Reason
from authz.request.jose import TokenError, parse
from authz.request.pipeline import Outcome, Pipeline
from authz.request.respond import http_status
from authz.request.view import KnownConnection, RequestError, request_view


def explain(
    pipeline: Pipeline,
    *,
    method: str,
    host: str,
    path: str,
    headers: Mapping[str, str],
    context: Mapping[str, str],
    token: str | None,
    problems: list[str],
    scheme: str = "https",
) -> dict[str, Any]:
    """Decide the request a user describes (a token goes in `Authorization: Bearer`; the
    proxy is taken to report `scheme`, which a DPoP proof's `htu` names) and describe the
    decision and everything behind it."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if token:
        lowered["authorization"] = f"Bearer {token}"
    connection = KnownConnection(scheme=scheme)
    try:
        view = request_view(method, host, path, lowered, context, connection=connection)
        answer, outcome = pipeline.check(view)
    except RequestError as exc:
        answer, outcome = pipeline.reject(Reason.REQUEST_INVALID, str(exc))
    decision = outcome.decision
    out: dict[str, Any] = {
        "decision": "allow" if decision.allowed else "deny",
        "status": http_status(decision),
        "reason": decision.reason.value,
        "detail": decision.detail or None,
        "policy": decision.policy,
        "rule": decision.rule,
        "snapshot": outcome.snapshot_version,
    }
    if outcome.would_deny is not None:
        out["dry_run"] = True
        out["would_deny"] = outcome.would_deny.reason.value
        out["would_status"] = http_status(outcome.would_deny)
    issuer = _token_issuer(outcome, token)
    if issuer is not None:
        out["issuer"] = {"id": issuer.id, "iss": issuer.issuer}
        if issuer.has_keys:
            out["issuer"]["keys"] = issuer.keys.state().status()
        if issuer.introspection is not None:
            out["issuer"]["introspection"] = _introspection(issuer.introspection.state())
    if decision.identity is not None:
        out["subject"] = decision.identity.subject
        out["scopes"] = list(decision.identity.scopes)
        out["roles"] = list(decision.identity.roles)
    if decision.allowed:
        out["upstream_headers"] = dict(answer.headers)
        out["removed_headers"] = list(answer.remove)
    else:
        # The answer's own challenge: under a policy that reads DPoP it names that scheme.
        out["www_authenticate"] = dict(answer.headers).get("www-authenticate")
        if decision.required_scopes:
            out["required_scopes"] = list(decision.required_scopes)
    if problems:
        out["policy_problems"] = problems
    return out


def _introspection(state: IntrospectionState) -> dict[str, Any]:
    """What explains an introspection denial: the endpoint and how calls to it went."""
    out: dict[str, Any] = {
        "endpoint": state.endpoint,
        "calls": state.calls,
        "circuitOpen": state.circuit_open,
    }
    if state.refused:
        out["refused"] = state.refused
    if state.last_error:
        out["lastError"] = state.last_error
    return out


def _token_issuer(outcome: Outcome, token: str | None) -> CompiledIssuer | None:
    """The issuer that verified the token or, when verification failed, the one its `iss`
    names in the chosen policy (or that introspects it): a denial for missing keys is
    explained by that issuer's keys, an introspection failure by its endpoint's state."""
    if outcome.verified is not None:
        return outcome.verified.issuer
    if outcome.policy is None or not token:
        return None
    introspecting = introspecting_issuer(token, outcome.policy)
    if introspecting is not None:
        return introspecting
    try:
        iss = parse(token).claims.get("iss")
    except TokenError:
        return None
    return outcome.policy.issuers_by_iss.get(iss) if isinstance(iss, str) else None
