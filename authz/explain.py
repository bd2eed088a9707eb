"""A decision explained: what `authz check` prints and `/debug/explain` answers.

One function for both, so the offline CLI and the running server explain a request the
same way. The output never contains the token, only what was learnt from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

from authz.check import Checker, Outcome
from authz.policy.issuer import CompiledIssuer
from authz.request.jose import TokenError, parse
from authz.request.respond import challenge, http_status


def check_request(
    *,
    method: str,
    host: str,
    path: str,
    headers: Mapping[str, str],
    context: Mapping[str, str],
    token: str | None,
) -> CheckRequest:
    """The CheckRequest Envoy would send; a token goes in `Authorization: Bearer`."""
    request = CheckRequest()
    http = request.attributes.request.http
    http.method, http.host, http.path = method.upper(), host, path
    http.headers.update({k.lower(): v for k, v in headers.items()})
    if token:
        http.headers["authorization"] = f"Bearer {token}"
    request.attributes.context_extensions.update(context)
    return request


def explain(
    checker: Checker, request: CheckRequest, token: str | None, problems: list[str]
) -> dict[str, Any]:
    """Decide `request` with `checker` and describe the decision and everything behind it."""
    response, outcome = checker.check(request)
    decision = outcome.decision
    out: dict[str, Any] = {
        "decision": "allow" if decision.allowed else "deny",
        "status": http_status(decision),
        "reason": decision.reason.value,
        "detail": decision.detail or None,
        "policy": decision.policy,
        "rule": decision.rule,
        "snapshot": checker.store.snapshot.version,
    }
    if outcome.would_deny is not None:
        out["dry_run"] = True
        out["would_deny"] = outcome.would_deny.reason.value
        out["would_status"] = http_status(outcome.would_deny)
    issuer = _token_issuer(outcome, token)
    if issuer is not None:
        out["issuer"] = {
            "id": issuer.id,
            "iss": issuer.issuer,
            "keys": issuer.keys.state().status(),
        }
    if decision.identity is not None:
        out["subject"] = decision.identity.subject
        out["scopes"] = list(decision.identity.scopes)
        out["roles"] = list(decision.identity.roles)
    if decision.allowed:
        out["upstream_headers"] = {
            h.header.key: h.header.value for h in response.ok_response.headers
        }
        out["removed_headers"] = list(response.ok_response.headers_to_remove)
    else:
        out["www_authenticate"] = challenge(
            decision.reason, checker.responder.realm, decision.required_scopes
        )
        if decision.required_scopes:
            out["required_scopes"] = list(decision.required_scopes)
    if problems:
        out["policy_problems"] = problems
    return out


def _token_issuer(outcome: Outcome, token: str | None) -> CompiledIssuer | None:
    """The issuer that verified the token or, when verification failed, the one its `iss`
    names in the chosen policy: a denial for missing keys is explained by that issuer's keys."""
    if outcome.verified is not None:
        return outcome.verified.issuer
    if outcome.policy is None or not token:
        return None
    try:
        iss = parse(token).claims.get("iss")
    except TokenError:
        return None
    return outcome.policy.issuers_by_iss.get(iss) if isinstance(iss, str) else None
