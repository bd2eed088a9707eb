"""The correlation ids read from a request: x-request-id, W3C traceparent, B3 (both forms)."""

from __future__ import annotations

import pytest

from authz.observe.correlation import TraceParent, request_id, trace_parent

T, S = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"traceparent": f"00-{T}-{S}-01"}, TraceParent(T, S, True, "w3c")),
        ({"traceparent": f"00-{T}-{S}-00"}, TraceParent(T, S, False, "w3c")),
        ({"traceparent": f"01-{T}-{S}-01-future"}, TraceParent(T, S, True, "w3c")),
        ({"traceparent": f"00-{T.upper()}-{S}-01"}, TraceParent(T, S, True, "w3c")),
        ({"traceparent": f"00-{T}-{S}-01-extra"}, None),  # version 00 has exactly 4 fields
        ({"traceparent": f"ff-{T}-{S}-01"}, None),
        ({"traceparent": f"00-{'0' * 32}-{S}-01"}, None),
        ({"traceparent": f"00-{T}-{'0' * 16}-01"}, None),
        ({"traceparent": f"00-{T[:-1]}g-{S}-01"}, None),
        ({"traceparent": "garbage"}, None),
        ({"b3": f"{T}-{S}-1"}, TraceParent(T, S, True, "b3")),
        ({"b3": f"{T[16:]}-{S}-d-05e3ac9a4f6e3b90"}, TraceParent("0" * 16 + T[16:], S, True, "b3")),
        ({"b3": f"{T}-{S}"}, TraceParent(T, S, None, "b3")),
        ({"b3": "0"}, None),  # a sampling decision only
        (
            {"x-b3-traceid": T, "x-b3-spanid": S, "x-b3-sampled": "0"},
            TraceParent(T, S, False, "b3"),
        ),
        (
            {"x-b3-traceid": T[16:], "x-b3-spanid": S, "x-b3-flags": "1"},
            TraceParent("0" * 16 + T[16:], S, True, "b3"),
        ),
        ({"x-b3-traceid": T}, None),
        ({"x-b3-traceid": "xyz", "x-b3-spanid": S}, None),
        # both: W3C wins, as OpenTelemetry's default propagators order them
        (
            {"traceparent": f"00-{T}-{S}-01", "b3": f"{'1' * 32}-{'2' * 16}"},
            TraceParent(T, S, True, "w3c"),
        ),
        ({}, None),
    ],
)
def test_trace_parent(headers: dict[str, str], expected: TraceParent | None) -> None:
    assert trace_parent(headers) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7c5a1f4e-98e3-4a53-b3f2-1c2d3e4f5a6b", "7c5a1f4e-98e3-4a53-b3f2-1c2d3e4f5a6b"),
        ("a" * 128, "a" * 128),
        ("a" * 129, None),  # a client cannot flood the audit line
        ("two words", None),
        ("line\nbreak", None),
        ("", None),
    ],
)
def test_request_id(value: str, expected: str | None) -> None:
    assert request_id({"x-request-id": value}) == expected
