"""The audit line is one line whatever a claim holds (issue 11, item 9)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
import structlog

from authz.observe import logs
from authz.observe.logs import _one_line


def test_line_separators_are_escaped() -> None:
    event = {"event": "decision", "sub": "a\u2028b\u2029c\u0085d\ne"}
    line = _one_line(event)
    assert not any(raw in line for raw in (b"\xe2\x80\xa8", b"\xe2\x80\xa9", b"\xc2\x85", b"\n"))
    assert json.loads(line) == event
    assert _one_line({"sub": "plain"}) == b'{"sub":"plain"}'


@pytest.fixture(autouse=True)
def _defaults_afterwards() -> Iterator[None]:
    """These tests configure logging for the process: leave it as other tests expect."""
    yield
    structlog.reset_defaults()
    logs._AUDIT.sink, logs._AUDIT.enabled = None, True


def test_audit_lines_are_what_structlog_would_write(capfd: pytest.CaptureFixture[str]) -> None:
    """The audit line skips structlog's processors for speed; it must not differ for a
    reader: one JSON object per line, `event`, the fields, `level`, an ISO UTC timestamp."""
    logs.configure("info")
    try:
        logs.audit_line("decision", {"decision": "allow", "sub": "a\u2028b"})
        structlog.get_logger("x").info("other", decision="deny")
        logs._AUDIT.sink.drain()  # type: ignore[union-attr]
        lines = capfd.readouterr().out.splitlines()
    finally:
        logs._AUDIT.sink.drain()  # type: ignore[union-attr]
    audit, other = (json.loads(line) for line in lines[-2:])
    assert list(audit) == ["event", "decision", "sub", "level", "timestamp"]
    assert audit["sub"] == "a\u2028b" and audit["level"] == other["level"] == "info"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", audit["timestamp"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", other["timestamp"])


def test_audit_lines_follow_the_configured_level(capfd: pytest.CaptureFixture[str]) -> None:
    logs.configure("warning")
    try:
        logs.audit_line("decision", {"decision": "allow"})
        logs._AUDIT.sink.drain()  # type: ignore[union-attr]
        assert "decision" not in capfd.readouterr().out
    finally:
        logs._AUDIT.sink.drain()  # type: ignore[union-attr]
