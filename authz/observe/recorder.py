"""What every transport does after a decision: the audit line, metrics and, if on, a span."""

from __future__ import annotations

import time
from collections.abc import Mapping

import structlog

from authz.observe.audit import Audit
from authz.observe.tracing import Tracing
from authz.request.pipeline import Outcome

log = structlog.get_logger("authz.server")


class Recorder:
    def __init__(self, audit: Audit, tracer: Tracing | None = None) -> None:
        self._audit = audit
        self._tracer = tracer

    def record(self, outcome: Outcome, seconds: float, headers: Mapping[str, str]) -> None:
        """`headers` are the request's, for the trace context the caller propagated."""
        self._audit.record(outcome, seconds, headers)
        if self._tracer is None:
            return
        end = time.time_ns()
        try:  # a tracing failure is logged, never turned into a failed Check
            self._tracer.record(headers, outcome, end - int(seconds * 1e9), end)
        except Exception:
            log.exception("tracing failed")
