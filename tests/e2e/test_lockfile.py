"""The image's dependencies: requirements.lock, the Dockerfile's install from it, the SBOM.

- The lock fits pyproject.toml (runtime dependencies, the `otel` extra, the build
  backend), every pin carries hashes, and an edited pyproject.toml is reported as stale.
- The Dockerfile's build stage is replayed without Docker (tests/support/image.py): the
  same `pip install --require-hashes -r requirements.lock` into a temp venv, then authz
  built offline. From that venv alone (no checkout on the path) `authz --version` answers
  and the image's entrypoint and command serve /healthz, with and without `--tracing`.
- `make sbom` describes that same environment: one component per installed package.

The replay downloads the locked wheels from PyPI the first time (pip's cache afterwards).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from authz.devtools import generate_key
from tests.support import image, lockfile, sbom
from tests.support.procs import Process, free_port, http_request, wait_for_http

REPO = image.REPO_ROOT
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def test_lock_fits_pyproject() -> None:
    assert lockfile.stale_reasons() == [], "requirements.lock is stale: run make lock"


def test_every_pin_has_a_hash_and_the_extras_are_locked() -> None:
    pins = lockfile.parse(lockfile.LOCK.read_text(encoding="utf-8"))
    assert all(pin.hashes for pin in pins.values())
    assert {"opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-grpc"} <= set(pins)
    assert "setuptools" in pins  # the build backend: authz is built offline from the lock


def test_an_edited_pyproject_makes_the_lock_stale(tmp_path: Path) -> None:
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    edited = text.replace('"orjson>=3.10",', '"orjson>=99",\n  "httpx>=0.27",')
    edited = edited.replace('"structlog>=25",\n', "")
    assert edited != text
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(edited, encoding="utf-8")
    reasons = lockfile.stale_reasons(pyproject=pyproject)
    assert any(r.startswith("orjson>=99 (dependencies) is locked at") for r in reasons), reasons
    assert "httpx>=0.27 (dependencies) is not in the lock" in reasons
    assert "structlog is locked as a direct requirement pyproject.toml no longer has" in reasons


def test_dockerfile_installs_only_from_the_lock_with_hashes() -> None:
    runs = [
        s.arguments for s in image.build_stage(image.DOCKERFILE.read_text()) if s.keyword == "RUN"
    ]
    pip_installs = [r for r in runs if "pip install" in r]
    own = [r for r in pip_installs if "--no-index" in r]
    assert len(own) == 1 and all(f in own[0] for f in ("--no-deps", "--no-build-isolation"))
    for command in pip_installs:
        if command not in own:  # everything else: from the lock, hash-checked, wheels only
            assert "--require-hashes" in command and "--only-binary=:all:" in command, command
    assert "-r requirements.lock" in pip_installs[0]


def test_oci_labels() -> None:
    labels = image.final_stage_labels(image.DOCKERFILE.read_text())
    assert labels["org.opencontainers.image.version"] == PROJECT["version"]
    assert labels["org.opencontainers.image.licenses"] == PROJECT["license"]
    assert labels["org.opencontainers.image.title"] == "authz"
    for key in ("description", "revision", "created", "base.name"):
        assert labels.get(f"org.opencontainers.image.{key}"), key


# -- the runtime environment, built as the image builds it ----------------------------------


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return image.build_runtime(tmp_path_factory.mktemp("image"))


def _clean_env() -> dict[str, str]:
    """No PYTHONPATH: the runtime venv alone must be enough."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.mark.timeout(900)
def test_runtime_holds_exactly_the_locked_packages(runtime: Path) -> None:
    pins = lockfile.parse(lockfile.LOCK.read_text(encoding="utf-8"))
    # A pin with a marker that does not hold here (async-timeout: Python < 3.11.3) is not
    # installed, by pip or in the image.
    expected = {
        name: pin.version for name, pin in pins.items() if name != "setuptools" and pin.applies()
    }
    found = image.installed(runtime)
    assert found.pop("authz") == PROJECT["version"]
    found.pop("pip")  # the venv's own installer
    assert found == expected


def test_authz_version_from_the_runtime(runtime: Path) -> None:
    out = subprocess.run(
        [str(runtime / "bin" / "authz"), "--version"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd="/",
        check=True,
    )
    assert out.stdout.strip() == f"authz {PROJECT['version']}"
    where = subprocess.run(
        [str(runtime / "bin" / "python"), "-c", "import authz; print(authz.__file__)"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd="/",
        check=True,
    ).stdout
    assert where.startswith(str(runtime)), where  # the installed package, not this checkout


def _instruction(name: str) -> list[str]:
    step = next(s for s in image.instructions(image.DOCKERFILE.read_text()) if s.keyword == name)
    return list(json.loads(step.arguments))


@pytest.mark.parametrize("extra", [[], ["--tracing"]], ids=["plain", "tracing"])
def test_entrypoint_serves_from_the_runtime(
    runtime: Path, tmp_path: Path, extra: list[str]
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    for path in (REPO / "examples" / "policies").glob("*.yaml"):
        (policies / path.name).write_text(path.read_text())
    (policies / "jwks.json").write_text(json.dumps({"keys": [generate_key("ES256", "k")[1]]}))
    grpc_port, http_port = free_port(), free_port()
    rendered = shlex.join([*_instruction("ENTRYPOINT"), *_instruction("CMD")])
    rendered = rendered.replace("/etc/authz/policies", str(policies))
    rendered = rendered.replace("0.0.0.0:9001", f"127.0.0.1:{grpc_port}")
    rendered = rendered.replace("0.0.0.0:9002", f"127.0.0.1:{http_port}")
    argv = shlex.split(rendered) + extra
    argv[0] = str(runtime / "bin" / argv[0])
    # No collector listens: the OTLP exporter only fails in the background.
    env = {**_clean_env(), "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    with Process(argv, name="image-entrypoint", env=env, cwd="/") as proc:
        wait_for_http(f"http://127.0.0.1:{http_port}/readyz", 30, proc=proc)
        assert http_request(f"http://127.0.0.1:{http_port}", "GET", "/healthz").status == 200
        assert "Traceback" not in proc.output()


def test_sbom_lists_every_installed_package(runtime: Path, tmp_path: Path) -> None:
    out = sbom.describe(runtime, tmp_path / "sbom.cdx.json")
    document = json.loads(out.read_text())
    assert document["bomFormat"] == "CycloneDX" and document["specVersion"] == "1.6"
    root = document["metadata"]["component"]
    assert (root["name"], root["version"]) == ("authz", PROJECT["version"])
    components = {
        canonicalize_name(c["name"]): c["version"] for c in document.get("components", [])
    }
    installed = image.installed(runtime)
    installed.pop("authz")
    assert components == installed
    assert all(c["purl"].startswith("pkg:pypi/") for c in document["components"])
