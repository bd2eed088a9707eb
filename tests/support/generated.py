"""Generated files in the repository against a fresh rendering: which are stale, and how.

Shared by the staleness tests of `make manifests` and `make proxy-configs`: each renders
into a temp dir, and a shipped file that differs (or is missing) yields a short unified diff.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


def stale(fresh: Iterable[Path], rendered_root: Path, repo: Path) -> list[str]:
    """One diff (first 40 lines) per file under ``rendered_root`` that ``repo`` ships differently."""
    diffs = []
    for path in fresh:
        relative = path.relative_to(rendered_root)
        shipped = repo / relative
        if shipped.exists() and shipped.read_text() == path.read_text():
            continue
        diff = difflib.unified_diff(
            shipped.read_text().splitlines() if shipped.exists() else [],
            path.read_text().splitlines(),
            f"shipped/{relative}",
            f"fresh/{relative}",
            lineterm="",
            n=1,
        )
        diffs.append("\n".join(list(diff)[:40]))
    return diffs
