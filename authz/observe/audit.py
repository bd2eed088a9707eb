"""One audit line and one metric update per decision. Never the token: only its claims' ids."""

from __future__ import annotations

from typing import Any

from authz.observe.logs import audit_line
from authz.observe.metrics import Metrics
from authz.request.pipeline import Outcome
from authz.request.respond import http_status

_MAX_COUNTER_CHILDREN = 10_000  # label sets come from policy ids and reason codes


def _text(value: Any) -> str | None:
    """Claims come from the token: log only short strings, so a token cannot flood the log."""
    return value if isinstance(value, str) and len(value) <= 256 else None


def _aud(value: Any) -> Any:
    if isinstance(value, list):
        return [_text(v) for v in value[:8]]
    return _text(value)


class Audit:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._counters: dict[tuple[bool, str, str | None], Any] = {}

    def _decisions(self, allowed: bool, reason: str, policy: str | None) -> Any:
        """The labelled counter child, looked up once per label set (labels() is the slow part)."""
        key = (allowed, reason, policy)
        child = self._counters.get(key)
        if child is None:
            child = self._metrics.decisions.labels(
                "allow" if allowed else "deny", reason, policy or ""
            )
            if len(self._counters) < _MAX_COUNTER_CHILDREN:
                self._counters[key] = child
        return child

    def record(self, outcome: Outcome, seconds: float) -> None:
        decision = outcome.decision
        self._decisions(decision.allowed, decision.reason.value, decision.policy).inc()
        self._metrics.check_seconds.observe(seconds)
        fields: dict[str, Any] = {
            "decision": "allow" if decision.allowed else "deny",
            "reason": decision.reason.value,
            "status": http_status(decision),
            "policy": decision.policy,
            "rule": decision.rule,
            "snapshot": outcome.snapshot_version,
            "latency_ms": round(seconds * 1000, 3),
        }
        if decision.detail:
            fields["detail"] = decision.detail
        would_deny = outcome.would_deny
        if would_deny is not None:
            self._metrics.dry_run_would_deny.labels(
                decision.policy or "", would_deny.reason.value
            ).inc()
            fields.update(
                dry_run=True,
                would_deny=would_deny.reason.value,
                would_status=http_status(would_deny),
            )
        request = outcome.request
        if request is not None:
            fields.update(method=request.method, host=request.host, path=request.path)
        auth = outcome.authentication
        if auth is not None and auth.binding is not None:
            fields["binding"] = auth.binding  # dpop, x5t#S256: what proved the key
        verified = outcome.verified
        if verified is not None:
            claims = verified.claims
            fields.update(
                iss=claims.get("iss"),
                sub=_text(claims.get("sub")),
                aud=_aud(claims.get("aud")),
                jti=_text(claims.get("jti")),
                kid=verified.kid,
            )
        audit_line("decision", fields)
