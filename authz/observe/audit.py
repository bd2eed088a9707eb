"""One audit line and one metric update per decision. Never the token: only its claims' ids.

The line's fields are rendered in groups, each group as orjson renders it inside the whole
object, so the line is the same bytes as rendering `fields()` at once. The groups that
repeat from Check to Check are kept: the decision's (decision, reason, status, policy, rule,
snapshot) and the verified token's (iss, sub, aud, jti, kid), per token object a later Check
is given again (a hot hit in the token cache: `Authentication.reused`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from authz.observe.correlation import request_id, trace_parent
from authz.observe.logs import audit_line, audit_members, audit_rendered
from authz.observe.metrics import Metrics
from authz.request.decision import Decision
from authz.request.pipeline import Outcome
from authz.request.respond import http_status
from authz.request.verify import VerifiedToken

_MAX_KEPT = 4096  # rendered groups kept; emptied when full
_HeadKey = tuple[bool, str, str | None, str | None, int]


def _text(value: Any) -> str | None:
    """Claims come from the token: log only short strings, so a token cannot flood the log."""
    return value if isinstance(value, str) and len(value) <= 256 else None


def _aud(value: Any) -> Any:
    if isinstance(value, list):
        return [_text(v) for v in value[:8]]
    return _text(value)


def _members(group: dict[str, Any]) -> bytes:
    """`group` as JSON object members: `"key":value,...` without the braces."""
    return orjson.dumps(group)[1:-1]


def _head(decision: Decision, snapshot: int) -> dict[str, Any]:
    return {
        "event": "decision",
        "decision": "allow" if decision.allowed else "deny",
        "reason": decision.reason.value,
        "status": http_status(decision),
        "policy": decision.policy,
        "rule": decision.rule,
        "snapshot": snapshot,
    }


def _token(verified: VerifiedToken) -> dict[str, Any]:
    claims = verified.claims
    return {
        "iss": claims.get("iss"),
        "sub": _text(claims.get("sub")),
        "aud": _aud(claims.get("aud")),
        "jti": _text(claims.get("jti")),
        "kid": verified.kid,
    }


def fields(
    outcome: Outcome, seconds: float, headers: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The audit line's fields after `event`, in order."""
    decision = outcome.decision
    out = _head(decision, outcome.snapshot_version)
    del out["event"]
    out["latency_ms"] = round(seconds * 1000, 3)
    if decision.detail:
        out["detail"] = decision.detail
    if headers is not None:
        out.update(_correlation(headers))
    would_deny = outcome.would_deny
    if would_deny is not None:
        out.update(
            dry_run=True, would_deny=would_deny.reason.value, would_status=http_status(would_deny)
        )
    request = outcome.request
    if request is not None:
        out.update(method=request.method, host=request.host, path=request.path)
    auth = outcome.authentication
    if auth is not None and auth.binding is not None:
        out["binding"] = auth.binding  # dpop, x5t#S256: what proved the key
    verified = outcome.verified
    if verified is not None:
        out.update(_token(verified))
    return out


def _correlation(headers: Mapping[str, str]) -> dict[str, Any]:
    """request_id, trace_id and parent_span_id (the proxy's span that made the Check);
    trace_format "b3" when the ids came from B3 headers rather than W3C traceparent."""
    out: dict[str, Any] = {}
    rid = request_id(headers)
    if rid is not None:
        out["request_id"] = rid
    parent = trace_parent(headers)
    if parent is not None:
        out["trace_id"] = parent.trace_id
        out["parent_span_id"] = parent.span_id
        if parent.format == "b3":
            out["trace_format"] = "b3"
    return out


class Audit:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._count = metrics.checks.count
        self._heads: dict[_HeadKey, bytes] = {}
        self._tokens: dict[int, tuple[VerifiedToken, bytes]] = {}

    def record(
        self, outcome: Outcome, seconds: float, headers: Mapping[str, str] | None = None
    ) -> None:
        """`headers`: the request's, for the ids that correlate the line (x-request-id, the
        caller's W3C or B3 trace context)."""
        decision = outcome.decision
        allowed = "allow" if decision.allowed else "deny"
        # the reason is a StrEnum: the member is its value as a str, without `.value`
        self._count((allowed, decision.reason, decision.policy or ""), seconds)
        would_deny = outcome.would_deny
        if would_deny is not None:
            self._metrics.dry_run_would_deny.labels(
                decision.policy or "", would_deny.reason.value
            ).inc()
        if audit_rendered():
            audit_members(self._line(outcome, decision, seconds, headers))
        else:
            audit_line("decision", fields(outcome, seconds, headers))

    def _line(
        self,
        outcome: Outcome,
        decision: Decision,
        seconds: float,
        headers: Mapping[str, str] | None,
    ) -> bytes:
        """`"event":"decision"` and `fields()` as JSON object members, from kept groups."""
        head_key = (
            decision.allowed,
            decision.reason,
            decision.policy,
            decision.rule,
            outcome.snapshot_version,
        )
        head = self._heads.get(head_key)
        if head is None:
            head = _members(_head(decision, outcome.snapshot_version))
            if len(self._heads) >= _MAX_KEPT:
                self._heads.clear()
            self._heads[head_key] = head
        parts = [head, b'"latency_ms":' + orjson.dumps(round(seconds * 1000, 3))]
        if decision.detail:
            parts.append(_members({"detail": decision.detail}))
        if headers is not None:
            correlation = _correlation(headers)
            if correlation:
                parts.append(_members(correlation))
        would_deny = outcome.would_deny
        if would_deny is not None:
            parts.append(
                _members(
                    {
                        "dry_run": True,
                        "would_deny": would_deny.reason.value,
                        "would_status": http_status(would_deny),
                    }
                )
            )
        request = outcome.request
        if request is not None:
            parts.append(
                _members({"method": request.method, "host": request.host, "path": request.path})
            )
        auth = outcome.authentication
        if auth is not None and auth.binding is not None:
            parts.append(_members({"binding": auth.binding}))
        verified = outcome.verified
        if verified is not None and (auth is None or not auth.reused):
            parts.append(_members(_token(verified)))  # a token object not seen again
        elif verified is not None:
            # The entry holds `verified`, so its id cannot be reused while the entry lives.
            kept = self._tokens.get(id(verified))
            if kept is None or kept[0] is not verified:
                kept = (verified, _members(_token(verified)))
                if len(self._tokens) >= _MAX_KEPT:
                    self._tokens.clear()
                self._tokens[id(verified)] = kept
            parts.append(kept[1])
        return b",".join(parts)
