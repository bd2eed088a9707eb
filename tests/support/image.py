"""Replay the Dockerfile's build stage without a container engine.

    venv = build_runtime(tmp_path)     # the image's /opt/authz, built here
    subprocess.run([venv / "bin" / "authz", "--version"])

The build stage (everything before the second ``FROM``) is read instruction by instruction
and carried out on this machine: ``WORKDIR`` and ``COPY`` into a temp source directory,
``ENV`` into the environment, and each ``RUN`` command exactly as written, in bash, with
``/opt/authz`` and ``/src`` pointing into the temp directory and ``python`` being this
machine's CPython 3.11. So the test installs from requirements.lock with the very pip
command the image build runs. An instruction this replay does not know fails loudly
instead of being skipped.

The one difference from a container build: pip's download cache is kept
(``PIP_NO_CACHE_DIR`` is not applied), so repeated runs do not download every wheel
again. ``--require-hashes`` checks cached files as strictly as downloaded ones.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
VENV_IN_IMAGE = "/opt/authz"
NOT_REPLAYED_ENV = frozenset({"PIP_NO_CACHE_DIR"})


class ReplayError(RuntimeError):
    """A build-stage instruction failed or is not one the replay understands."""


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def instructions(text: str) -> list[Instruction]:
    """Dockerfile instructions with line continuations joined and comments dropped."""
    out: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, arguments = line.strip().partition(" ")
        out.append(Instruction(keyword.upper(), arguments.strip()))
    return out


def build_stage(text: str) -> list[Instruction]:
    """The instructions of the first stage, after its FROM."""
    stages: list[list[Instruction]] = []
    for instruction in instructions(text):
        if instruction.keyword == "FROM":
            stages.append([])
        elif stages:
            stages[-1].append(instruction)
    if len(stages) < 2:
        raise ReplayError("expected a multi-stage Dockerfile (build stage + final stage)")
    return stages[0]


def final_stage_labels(text: str) -> dict[str, str]:
    """LABEL key="value" pairs of the last stage (ARG defaults substituted)."""
    args: dict[str, str] = {}
    labels: dict[str, str] = {}
    for instruction in instructions(text.rsplit("\nFROM ", maxsplit=1)[-1]):
        if instruction.keyword == "ARG":
            name, _, default = instruction.arguments.partition("=")
            args[name] = default
        if instruction.keyword == "LABEL":
            for item in shlex.split(instruction.arguments):
                key, _, value = item.partition("=")
                labels[key] = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), value)
    return labels


def python311() -> str:
    """The CPython 3.11 interpreter standing in for the image's `python`."""
    base = getattr(sys, "_base_executable", sys.executable)
    if sys.version_info[:2] == (3, 11):
        return str(base)
    found = shutil.which("python3.11")
    if found is None:
        raise ReplayError("the image runs CPython 3.11; no python3.11 found here")
    return found


def _env(extra: dict[str, str], bin_dir: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV"))
    }
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def build_runtime(root: Path, dockerfile: Path = DOCKERFILE, timeout: float = 900.0) -> Path:
    """Carry out the build stage under ``root``; return the built venv (the image's
    /opt/authz)."""
    venv, src = root / "opt-authz", root / "src"
    python_dir = root / "python-bin"  # `python` on PATH, as in the base image
    python_dir.mkdir(parents=True, exist_ok=True)
    (python_dir / "python").unlink(missing_ok=True)
    (python_dir / "python").symlink_to(python311())
    env_vars: dict[str, str] = {}
    workdir = src
    for step in build_stage(dockerfile.read_text(encoding="utf-8")):
        if step.keyword == "ENV":
            for item in shlex.split(step.arguments):
                key, _, value = item.partition("=")
                if key not in NOT_REPLAYED_ENV:
                    env_vars[key] = value
        elif step.keyword == "WORKDIR":
            workdir = src if step.arguments == "/src" else _fail(step)
            workdir.mkdir(parents=True, exist_ok=True)
        elif step.keyword == "COPY":
            _copy(step, workdir)
        elif step.keyword == "RUN":
            command = step.arguments.replace(VENV_IN_IMAGE, str(venv))
            proc = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", command],
                cwd=workdir,
                env=_env(env_vars, python_dir),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            if proc.returncode != 0:
                raise ReplayError(
                    f"RUN {step.arguments}\nexit {proc.returncode}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
                )
        else:
            _fail(step)
    return venv


def _copy(step: Instruction, workdir: Path) -> None:
    """`COPY SRC... DEST/` or `COPY SRC DEST` from the build context (this checkout)."""
    *sources, dest = shlex.split(step.arguments)
    if not sources or any(s.startswith("--") or s.startswith("/") for s in [*sources, dest]):
        _fail(step)
    for source in sources:
        origin = REPO_ROOT / source
        target = workdir / dest / origin.name if dest.endswith("/") else workdir / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_dir():
            ignore = shutil.ignore_patterns("__pycache__")
            shutil.copytree(origin, target, dirs_exist_ok=True, ignore=ignore)
        else:
            shutil.copy(origin, target)


def _fail(step: Instruction) -> Path:
    raise ReplayError(f"the replay does not handle `{step.keyword} {step.arguments}`")


def installed(venv: Path) -> dict[str, str]:
    """Distribution name (canonical) -> version installed in ``venv``."""
    code = (
        "import json, importlib.metadata as m, re\n"
        "print(json.dumps({re.sub(r'[-_.]+', '-', d.metadata['Name']).lower(): d.version"
        " for d in m.distributions()}))"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True
    )
    result: dict[str, str] = json.loads(out.stdout)
    return result
