"""The audit line is one line whatever a claim holds (issue 11, item 9)."""

from __future__ import annotations

import json

from authz.observe.logs import _one_line


def test_line_separators_are_escaped() -> None:
    event = {"event": "decision", "sub": "a\u2028b\u2029c\u0085d\ne"}
    line = _one_line(event)
    assert not any(raw in line for raw in (b"\xe2\x80\xa8", b"\xe2\x80\xa9", b"\xc2\x85", b"\n"))
    assert json.loads(line) == event
    assert _one_line({"sub": "plain"}) == b'{"sub":"plain"}'
