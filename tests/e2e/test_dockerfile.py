"""The image's entrypoint, run as the image would run it, but from the venv (no engine here)."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

from authz.devtools import generate_key
from tests.e2e.conftest import REPO_ROOT, child_env
from tests.support.procs import Process, free_port, http_request, wait_for_http

DOCKERFILE = REPO_ROOT / "Dockerfile"


def _instruction(name: str) -> list[str]:
    match = re.search(rf"^{name}\s+(\[.*\])\s*$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, f"{name} must be in exec form"
    return list(json.loads(match.group(1)))


def test_final_stage_is_non_root_and_runs_authz_serve() -> None:
    final = DOCKERFILE.read_text().split("\nFROM ")[-1]
    assert re.search(r"^USER 65532:65532$", final, re.MULTILINE)
    assert _instruction("ENTRYPOINT") == ["authz", "serve"]
    assert "COPY tests" not in final and "COPY examples" not in final


def test_entrypoint_and_default_command_serve(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    for path in (REPO_ROOT / "examples" / "policies").glob("*.yaml"):
        (policies / path.name).write_text(path.read_text())
    (policies / "jwks.json").write_text(json.dumps({"keys": [generate_key("ES256", "k")[1]]}))
    grpc_port, http_port = free_port(), free_port()
    command = [*_instruction("ENTRYPOINT"), *_instruction("CMD")]
    rendered = shlex.join(command)
    rendered = rendered.replace("/etc/authz/policies", str(policies))
    rendered = rendered.replace("0.0.0.0:9001", f"127.0.0.1:{grpc_port}")
    rendered = rendered.replace("0.0.0.0:9002", f"127.0.0.1:{http_port}")
    argv = shlex.split(rendered)
    argv[0] = str(Path(sys.executable).parent / argv[0])  # the console script pip installed
    with Process(argv, name="entrypoint", env=child_env(), cwd=REPO_ROOT) as proc:
        wait_for_http(f"http://127.0.0.1:{http_port}/readyz", 20, proc=proc)
        assert http_request(f"http://127.0.0.1:{http_port}", "GET", "/healthz").status == 200
