"""The ids that tie an audit line to the proxy's access log and to a trace: `x-request-id`
(Envoy sets it on every request) and the caller's trace context, W3C `traceparent` or,
when that is what the mesh propagates, B3 (`b3` single header or `x-b3-*`).

Parsed without OpenTelemetry (tracing is optional; the audit line is not), and strictly:
a value that is not a well-formed id is ignored, never logged, so a client cannot put
arbitrary text into the audit line through these headers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

_HEX = frozenset("0123456789abcdef")
_VISIBLE = frozenset(map(chr, range(0x21, 0x7F)))  # request ids: UUIDs and the like
_ZERO32, _ZERO16 = "0" * 32, "0" * 16


def _hex(text: str, length: int) -> bool:
    """Exactly `length` lower-case hex digits (string methods only: no regex on request data)."""
    return len(text) == length and _HEX.issuperset(text)


@dataclass(frozen=True, slots=True)
class TraceParent:
    """The caller's span: its trace id (32 hex), span id (16 hex) and sampling decision."""

    trace_id: str
    span_id: str
    sampled: bool | None
    format: str  # "w3c" or "b3"


def request_id(headers: Mapping[str, str]) -> str | None:
    value = headers.get("x-request-id")
    return value if value and len(value) <= 128 and _VISIBLE.issuperset(value) else None


def trace_parent(headers: Mapping[str, str]) -> TraceParent | None:
    """W3C traceparent if valid, else B3 (single header, then multi-header), else None."""
    return _w3c(headers.get("traceparent")) or _b3_single(headers.get("b3")) or _b3_multi(headers)


def _w3c(value: str | None) -> TraceParent | None:
    if not value or len(value) > 512:
        return None
    parts = value.strip().lower().split("-")
    if len(parts) < 4 or not all(map(_hex, parts[:4], (2, 32, 16, 2))):
        return None
    version, trace_id, span_id, flags = parts[:4]
    if version == "ff" or (version == "00" and len(parts) != 4):
        return None
    if trace_id == _ZERO32 or span_id == _ZERO16:
        return None
    return TraceParent(trace_id, span_id, bool(int(flags, 16) & 1), "w3c")


def _b3_ids(trace_id: str, span_id: str) -> tuple[str, str] | None:
    trace_id, span_id = trace_id.lower(), span_id.lower()
    if _hex(trace_id, 16):
        trace_id = _ZERO16 + trace_id  # 64-bit B3 trace ids are left-padded
    if not _hex(trace_id, 32) or not _hex(span_id, 16):
        return None
    if trace_id == _ZERO32 or span_id == _ZERO16:
        return None
    return trace_id, span_id


def _b3_sampled(flag: str | None) -> bool | None:
    if flag in ("1", "d", "true"):
        return True
    if flag in ("0", "false"):
        return False
    return None


def _b3_single(value: str | None) -> TraceParent | None:
    """`{TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]]`; a lone sampling flag has no ids."""
    if not value or len(value) > 512:
        return None
    parts = value.strip().split("-")
    if len(parts) < 2:
        return None
    ids = _b3_ids(parts[0], parts[1])
    if ids is None:
        return None
    return TraceParent(*ids, _b3_sampled(parts[2] if len(parts) > 2 else None), "b3")


def _b3_multi(headers: Mapping[str, str]) -> TraceParent | None:
    trace_id, span_id = headers.get("x-b3-traceid"), headers.get("x-b3-spanid")
    if not trace_id or not span_id:
        return None
    ids = _b3_ids(trace_id.strip(), span_id.strip())
    if ids is None:
        return None
    flag = "d" if headers.get("x-b3-flags") == "1" else headers.get("x-b3-sampled")
    return TraceParent(*ids, _b3_sampled(flag), "b3")
