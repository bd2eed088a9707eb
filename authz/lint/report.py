"""How `authz lint` prints what it found: lines for people, one JSON document for CI."""

from __future__ import annotations

import json
from typing import Any

from authz.lint.findings import Checked

# Exit codes, stable for CI pipelines (documented in the CLI reference).
OK = 0
INVALID = 1  # errors found (or warnings, with --strict)
USAGE = 2  # bad arguments or an input that does not exist: nothing was checked
UNAVAILABLE = 3  # the cluster could not be read


def exit_code(checked: Checked, *, strict: bool) -> int:
    return INVALID if checked.errors or (strict and checked.warnings) else OK


def text(checked: Checked, *, strict: bool) -> str:
    """`ERROR origin: object: message` per problem, `ok` per clean object, a summary."""
    lines = []
    by_object = {f.object for f in checked.findings}
    for finding in checked.findings:
        level = "ERROR" if finding.level == "error" else "WARN "
        where = f"{finding.object}: " if finding.object else ""
        lines.append(f"{level} {finding.origin}: {where}{finding.message}")
    for key, (origin, _accepted) in sorted(checked.objects.items()):
        if key not in by_object:
            lines.append(f"ok    {key} ({origin})")
    failed = exit_code(checked, strict=strict) != OK
    verdict = "errors found" if checked.errors else "no errors"
    if checked.warnings:
        verdict += f", {checked.warnings} warning(s)" + (" (--strict)" if strict and failed else "")
    lines.append(f"{len(checked.objects)} object(s), {verdict}")
    return "\n".join(lines)


def as_json(checked: Checked, *, strict: bool) -> str:
    doc: dict[str, Any] = {
        "ok": exit_code(checked, strict=strict) == OK,
        "errors": checked.errors,
        "warnings": checked.warnings,
        "objects": [
            {"object": key, "origin": origin, "accepted": accepted}
            for key, (origin, accepted) in sorted(checked.objects.items())
        ],
        "findings": [f.as_json() for f in checked.findings],
    }
    return json.dumps(doc, indent=2)
