"""The security suite reports its figures: how many hostile cases were decided correctly."""

from __future__ import annotations

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    passed = terminalreporter.stats.get("passed", [])
    for test, transport in (("test_adversarial", "gRPC"), ("test_adversarial_over_http", "HTTP")):
        cases = sum(1 for r in passed if f"test_adversarial.py::{test}[" in r.nodeid)
        if cases:
            terminalreporter.write_line(
                f"security: {cases} adversarial token/request cases decided as expected "
                f"over {transport}"
            )
    dpop = sum(1 for r in passed if "test_adversarial_dpop.py::test_adversarial_dpop[" in r.nodeid)
    if dpop:
        terminalreporter.write_line(
            f"security: {dpop} adversarial DPoP proof/key-binding cases decided as expected"
        )
