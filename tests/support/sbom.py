"""`make sbom`: a CycloneDX SBOM of exactly what the image's virtualenv holds.

    python -m tests.support.sbom [OUT]     # default: build/sbom/authz-<version>.cdx.json

The image's /opt/authz is rebuilt here from requirements.lock by replaying the
Dockerfile's build stage (tests/support/image.py), and cyclonedx-py (the CycloneDX
project's own tool, from PyPI) describes that environment: every installed distribution
with its version, licence and package URL, authz as the root component (from
pyproject.toml). The base image's Debian packages are not in it; scan the built image for
those.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from tests.support import image

REPO_ROOT = image.REPO_ROOT


def default_output() -> Path:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return REPO_ROOT / "build" / "sbom" / f"authz-{project['project']['version']}.cdx.json"


def describe(venv: Path, out: Path) -> Path:
    """Write the SBOM of ``venv`` to ``out`` (validated against the CycloneDX schema)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    cyclonedx = Path(sys.executable).parent / "cyclonedx-py"
    subprocess.run(
        [
            str(cyclonedx), "environment", str(venv / "bin" / "python"),
            "--pyproject", str(REPO_ROOT / "pyproject.toml"),
            "--mc-type", "application",
            "--spec-version", "1.6",
            "--output-format", "JSON",
            "--output-reproducible",
            "--validate",
            "--output-file", str(out),
        ],
        check=True,
    )  # fmt: skip
    return out


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else default_output()
    with tempfile.TemporaryDirectory(prefix="authz-sbom-") as tmp:
        venv = image.build_runtime(Path(tmp))
        describe(venv, out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
