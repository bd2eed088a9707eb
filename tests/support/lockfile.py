"""`make lock`: requirements.lock, everything the image installs, pinned with hashes.

    python -m tests.support.lockfile            # rewrite requirements.lock (needs PyPI)
    stale_reasons(Path("requirements.lock"))    # why the lock no longer fits pyproject.toml

uv resolves, for CPython 3.11 on every platform (``--universal``), with the sha256 of
every file PyPI has for each pinned version:

- ``[project] dependencies``: the runtime;
- the ``otel`` extra, so ``authz serve --tracing`` works in the image;
- ``[build-system] requires``: the Dockerfile builds authz itself with
  ``--no-build-isolation --no-index``, so its build backend comes from the lock too and no
  unpinned package is downloaded during a build.

The Dockerfile installs the file with ``pip --require-hashes``. tests/e2e/test_lockfile.py
fails when pyproject.toml changed without ``make lock`` (``stale_reasons``), and replays
the Dockerfile's install without Docker.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCK = REPO_ROOT / "requirements.lock"
EXTRAS = ("otel",)
PYTHON_VERSION = "3.11"  # the Dockerfile's base image
BUILD_INPUT = "build-system.in"  # names the build requirements in the lock's `# via` lines
# Markers are evaluated for the image: CPython 3.11 on Linux.
IMAGE_ENV = {
    "python_version": PYTHON_VERSION,
    "python_full_version": f"{PYTHON_VERSION}.0",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "extra": "",
}


@dataclass
class Pin:
    """One package in the lock: its version, hashes and what pulled it in."""

    name: str
    version: str
    hashes: list[str] = field(default_factory=list)
    via: list[str] = field(default_factory=list)
    marker: str | None = None  # an environment marker: installed only where it holds

    def applies(self, environment: dict[str, str] | None = None) -> bool:
        """Whether pip installs this pin in `environment` (default: this interpreter)."""
        return self.marker is None or Marker(self.marker).evaluate(environment)


PYPROJECT = REPO_ROOT / "pyproject.toml"


def direct_requirements(pyproject: Path = PYPROJECT) -> dict[str, list[Requirement]]:
    """What the lock must satisfy, by where pyproject.toml declares it."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    meta = project["project"]
    build = project["build-system"]
    assert isinstance(meta, dict) and isinstance(build, dict)
    groups = {"dependencies": [Requirement(r) for r in meta["dependencies"]]}
    for extra in EXTRAS:
        groups[f"extra {extra}"] = [Requirement(r) for r in meta["optional-dependencies"][extra]]
    groups["build-system"] = [Requirement(r) for r in build["requires"]]
    return groups


def uv_binary() -> str:
    from uv import find_uv_bin

    return str(find_uv_bin())


def compile_lock(out: Path = LOCK) -> Path:
    """Resolve with uv into ``out``. The inputs are copied into a temp dir so the lock's
    `# via` annotations name them without any temp path."""
    with tempfile.TemporaryDirectory(prefix="authz-lock-") as tmp:
        work = Path(tmp)
        shutil.copy(REPO_ROOT / "pyproject.toml", work / "pyproject.toml")
        build = "\n".join(str(r) for r in direct_requirements()["build-system"])
        (work / BUILD_INPUT).write_text(build + "\n", encoding="utf-8")
        argv = [uv_binary(), "pip", "compile", "pyproject.toml", BUILD_INPUT]
        argv += [arg for extra in EXTRAS for arg in ("--extra", extra)]
        argv += ["--generate-hashes", "--universal", "--python-version", PYTHON_VERSION]
        argv += ["--custom-compile-command", "make lock", "--quiet", "-o", "lock.txt"]
        if out.exists():  # keep the current pins where they still fit (no silent upgrades)
            shutil.copy(out, work / "lock.txt")
        subprocess.run(argv, cwd=work, check=True)
        shutil.copy(work / "lock.txt", out)
    return out


_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)(?:\s*;\s*([^\\]+?))?\s*(?:\\|$)")
_HASH = re.compile(r"--hash=(sha256:[0-9a-f]{64})")


def parse(text: str) -> dict[str, Pin]:
    """The pins of a `uv pip compile --generate-hashes` file, by canonical name."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    in_via = False
    for line in text.splitlines():
        match = _PIN.match(line)
        if match:
            current = Pin(canonicalize_name(match.group(1)), match.group(2), marker=match.group(3))
            pins[current.name] = current
            in_via = False
        if current is None:
            continue
        current.hashes += _HASH.findall(line)
        comment = line.strip()
        if comment.startswith("# via"):
            rest = comment.removeprefix("# via").strip()
            in_via = not rest
            if rest:
                current.via.append(rest)
        elif in_via and comment.startswith("#   "):
            current.via.append(comment.removeprefix("#").strip())
    return pins


def stale_reasons(lock: Path = LOCK, pyproject: Path = PYPROJECT) -> list[str]:
    """Every way the lock no longer fits pyproject.toml (empty: it fits)."""
    pins = parse(lock.read_text(encoding="utf-8"))
    reasons = []
    declared: set[str] = set()
    for group, requirements in direct_requirements(pyproject).items():
        for req in requirements:
            if req.marker is not None and not req.marker.evaluate(IMAGE_ENV):
                continue
            name = canonicalize_name(req.name)
            declared.add(name)
            pin = pins.get(name)
            if pin is None:
                reasons.append(f"{req} ({group}) is not in the lock")
            elif not req.specifier.contains(pin.version, prereleases=True):
                reasons.append(f"{req} ({group}) is locked at {pin.version}")
            for extra in req.extras:  # pyjwt[crypto]: the extra's packages must be locked
                if not any(
                    f"{req.name}[{extra}]" in via or name in via
                    for p in pins.values()
                    for via in p.via
                ):
                    reasons.append(f"{req} ({group}): nothing in the lock comes from [{extra}]")
    for pin in pins.values():
        if not pin.hashes:
            reasons.append(f"{pin.name}=={pin.version} has no --hash")
        direct = [v for v in pin.via if v.startswith("authz") or BUILD_INPUT in v]
        if direct and pin.name not in declared and len(direct) == len(pin.via):
            reasons.append(
                f"{pin.name} is locked as a direct requirement pyproject.toml no longer has"
            )
    return reasons


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else LOCK
    compile_lock(out)
    reasons = stale_reasons(out)
    for reason in reasons:
        print(f"lock: {reason}", file=sys.stderr)
    print(f"{out}: {len(parse(out.read_text(encoding='utf-8')))} packages pinned with hashes")
    return 1 if reasons else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
