"""The image's Python environment, for the rows that measure authz's memory.

The development venv holds packages the image does not (test, docs and SBOM tools), and
some of authz's dependencies import optional ones whenever they are installed: jsonschema
loads its format checkers' libraries (rfc3987-syntax builds a lark grammar), structlog
loads rich. That costs ~30 MB of RSS which no deployed authz carries, so the memory row
runs authz on the packages of requirements.lock, installed the way the Dockerfile does
(tests/support/image.py replays its build stage), with this checkout's code first on
PYTHONPATH. Built once per lock and Dockerfile under .bench/, then reused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from tests.support import image

BENCH_DIR = image.REPO_ROOT / ".bench"


def _key() -> str:
    digest = hashlib.sha256()
    for path in (image.REPO_ROOT / "requirements.lock", image.DOCKERFILE):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def image_python(log: object = print) -> Path:
    """The image venv's python, built first if this lock has none yet (raises ReplayError
    or OSError when it cannot be built, e.g. without access to PyPI; FileNotFoundError
    when BENCH_NO_BUILD=1 forbids building it)."""
    root = BENCH_DIR / f"image-env-{_key()}"
    python = root / "opt-authz" / "bin" / "python"
    if (root / "done").is_file() and python.exists():
        return python
    if os.environ.get("BENCH_NO_BUILD"):
        raise FileNotFoundError(f"{root} not built (BENCH_NO_BUILD is set)")
    if callable(log):
        log(f"  (building the image's Python environment in {root}: once per lock)")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    image.build_runtime(root)
    (root / "done").write_text("built\n")
    return python
