"""The `authz` command as a user runs it: keys, tokens, lint, and an explained decision."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import REPO_ROOT, child_env

EXAMPLES = REPO_ROOT / "examples" / "policies"


def authz(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authz", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(**(env or {})),
        cwd=REPO_ROOT,
        check=False,
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    policies = root / "policies"
    policies.mkdir()
    for path in EXAMPLES.glob("*.yaml"):
        (policies / path.name).write_text(path.read_text())
    result = authz("keys", "generate", "--alg", "ES256", "--kid", "cli-1", "--out", str(policies))
    assert result.returncode == 0, result.stderr
    return policies, policies / "cli-1.private.jwk.json"


def mint(key: Path, *args: str) -> str:
    result = authz(
        "token",
        "mint",
        "--key",
        str(key),
        "--iss",
        "https://demo.authz.local",
        "--aud",
        "orders-api",
        *args,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def check(policies: Path, token: str | None, *args: str) -> tuple[int, dict[str, Any]]:
    env = {"AUTHZ_TOKEN": token} if token else None
    result = authz("check", "--policy-dir", str(policies), *args, env=env)
    return result.returncode, json.loads(result.stdout)


def test_keys_generate_writes_private_jwk_and_public_jwks(setup: tuple[Path, Path]) -> None:
    policies, key = setup
    assert key.stat().st_mode & 0o777 == 0o600
    [public] = json.loads((policies / "jwks.json").read_text())["keys"]
    assert public["kid"] == "cli-1" and "d" not in public


def test_check_explains_an_allow(setup: tuple[Path, Path]) -> None:
    policies, key = setup
    code, out = check(
        policies, mint(key, "--scope", "orders.read", "--sub", "bob"), "--path", "/orders/9"
    )
    assert code == 0
    assert out["decision"] == "allow" and out["rule"] == "read-orders" and out["subject"] == "bob"
    issuer = out["issuer"]
    assert (issuer["id"], issuer["iss"]) == ("JWTIssuer/default/demo", "https://demo.authz.local")
    keys = issuer["keys"]
    assert (keys["source"], keys["ready"], keys["kids"]) == (
        f"jwksFile {policies / 'jwks.json'}",
        True,
        ["cli-1"],
    )
    assert out["upstream_headers"]["x-auth-subject"] == "bob"


def test_check_explains_a_deny(setup: tuple[Path, Path]) -> None:
    policies, key = setup
    code, out = check(
        policies, mint(key, "--scope", "orders.read"), "--method", "POST", "--path", "/orders"
    )
    assert code == 1
    assert (out["status"], out["reason"], out["rule"]) == (
        403,
        "insufficient_scope",
        "write-orders",
    )
    assert out["required_scopes"] == ["orders.write"]
    code, out = check(policies, mint(key, "--ttl", "-600"), "--path", "/orders/1")
    assert (code, out["status"], out["reason"]) == (1, 401, "token_expired")
    assert 'error="invalid_token"' in out["www_authenticate"]


def test_lint_reports_file_object_and_field(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "apiVersion: authz.io/v1alpha1\nkind: AuthzPolicy\nmetadata: {name: p}\n"
        "spec: {targets: {hosts: ['*']}, rules: [{action: sometimes}]}\n"
    )
    result = authz("lint", str(tmp_path))
    assert result.returncode == 1
    assert (
        f"ERROR {tmp_path / 'bad.yaml'}: AuthzPolicy/default/p: spec.rules[0].action: 'sometimes' is not one of"
        in result.stdout
    )


def test_lint_reports_policies_claiming_the_same_host_as_errors(tmp_path: Path) -> None:
    """Two policies for one host used to be tie-broken by name in silence (issue 11)."""
    for name in ("orders", "billing"):
        (tmp_path / f"{name}.yaml").write_text(
            f"apiVersion: authz.io/v1alpha1\nkind: AuthzPolicy\nmetadata: {{name: {name}}}\n"
            "spec: {targets: {hosts: [shop.example]}, rules: [{action: allowAnonymous}]}\n"
        )
    result = authz("lint", str(tmp_path))
    assert result.returncode == 1, result.stdout
    assert f"ok    AuthzPolicy/default/billing ({tmp_path / 'billing.yaml'})" in result.stdout
    assert (
        f"ERROR {tmp_path / 'orders.yaml'}: AuthzPolicy/default/orders: host 'shop.example' is "
        "served by AuthzPolicy/default/billing"
    ) in result.stdout


def test_lint_passes_the_examples(setup: tuple[Path, Path]) -> None:
    result = authz("lint", str(setup[0]))
    assert result.returncode == 0, result.stdout
    assert "2 object(s), no errors" in result.stdout
