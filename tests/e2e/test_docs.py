"""The docs site: current generated pages, a strict build, and pages that work as written.

- The generated pages (policy reference, CLI reference, troubleshooting, compatibility) are
  what `make docs` renders now from their sources.
- `mkdocs build --strict` succeeds: no broken link or anchor, every page in the nav, every
  included recipe file present.
- Every identity-provider recipe passes `authz lint`, and decides a request carrying a token
  of that provider's shape (its `iss`, audience, scope and role claims, signed with a test
  key that stands in for the provider's) the way the recipe says.
- The commands of "Your first policy" run in order in a shell, with the page's own files,
  and every `# => DECISION STATUS REASON` it shows is what `authz check` answers.
"""

from __future__ import annotations

import base64
import difflib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.devtools import generate_key, mint_token
from authz.policy import schema
from authz.request.decision import Reason
from tests.support import docs_site

REPO = docs_site.REPO_ROOT
DOCS = REPO / "docs"
RECIPES = sorted((DOCS / "recipes" / "yaml").glob("*.yaml"))
BIN = Path(sys.executable).parent


def test_generated_pages_are_current(tmp_path: Path) -> None:
    stale = []
    for fresh in docs_site.render(tmp_path):
        relative = fresh.relative_to(tmp_path)
        shipped = REPO / relative
        old = shipped.read_text().splitlines() if shipped.exists() else []
        if old != fresh.read_text().splitlines():
            diff = difflib.unified_diff(old, fresh.read_text().splitlines(), lineterm="", n=1)
            stale.append(f"{relative}:\n" + "\n".join(list(diff)[:30]))
    assert not stale, "generated docs are stale: run make docs\n" + "\n\n".join(stale)


def test_site_builds_strict(tmp_path: Path) -> None:
    result = docs_site.build(tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    page = (tmp_path / "site" / "troubleshooting.html").read_text()
    assert all(f'id="{reason.value}"' in page for reason in Reason)


def test_policy_reference_documents_every_field() -> None:
    page = (DOCS / "reference" / "policy.md").read_text()

    def names(node: dict[str, Any]) -> set[str]:
        found: set[str] = set()
        for name, child in node.get("properties", {}).items():
            found.add(name)
            found |= names(child.get("items", child) if child.get("type") == "array" else child)
        return found

    for spec in (
        schema.ISSUER_SPEC,
        schema.POLICY_SPEC,
        schema.SPECS["HostGrant"],
        schema.REVOCATION_SPEC,
    ):
        missing = sorted(n for n in names(spec) if f"`{n}`" not in page)
        assert not missing, missing
    assert all(message.split(":")[0] in page for *_, message in schema.RULES)


def test_every_recipe_is_on_a_page() -> None:
    pages = "\n".join(p.read_text() for p in (DOCS / "recipes").glob("*.md"))
    for recipe in RECIPES:
        assert f'"recipes/yaml/{recipe.name}"' in pages, recipe.name


def _authz(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Any:
    return subprocess.run(
        [str(BIN / "authz"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_passes_lint(recipe: Path, tmp_path: Path) -> None:
    (tmp_path / recipe.name).write_text(recipe.read_text())
    result = _authz("lint", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.rstrip().endswith("no errors"), result.stdout
    kinds = [d["kind"] for d in yaml.safe_load_all(recipe.read_text()) if d]
    assert "AuthzPolicy" in kinds and ({"JWTIssuer", "ClusterJWTIssuer"} & set(kinds))


# A token of each provider's shape (shared/notes/idp-token-shapes.md), the request it makes,
# and the answer the recipe must give; `deny` cases show what the recipe refuses.
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CASES: list[tuple[str, dict[str, Any], tuple[str, str, str], tuple[int, str]]] = [
    (
        "keycloak",
        {
            "iss": "https://sso.example.com/realms/shop",
            "aud": ["orders-api", "account"],
            "typ": "Bearer",
            "azp": "web",
            "scope": "openid profile orders.read",
            "realm_access": {"roles": ["offline_access"]},
            "resource_access": {"orders-api": {"roles": ["orders-admin"]}},
            "preferred_username": "alice",
        },
        ("GET", "orders.example.com", "/admin/settings"),
        (200, "allowed"),
    ),
    (
        "keycloak",
        {
            "iss": "https://sso.example.com/realms/shop",
            "aud": "orders-api",
            "typ": "ID",
            "scope": "openid orders.read",
        },
        ("GET", "orders.example.com", "/orders/1"),
        (401, "required_claim_mismatch"),  # an ID token is not a credential
    ),
    (
        "okta",
        {
            "iss": "https://dev-123456.okta.com/oauth2/default",
            "aud": "api://default",
            "scp": ["openid", "orders.read"],
            "cid": "0oa1b2c3",
            "uid": "00u1",
        },
        ("GET", "orders.example.com", "/orders/1"),
        (200, "allowed"),
    ),
    (
        "auth0",
        {
            "iss": "https://example.eu.auth0.com/",
            "aud": ["https://orders.example.com/api", "https://example.eu.auth0.com/userinfo"],
            "scope": "openid read:orders",
            "permissions": ["read:orders"],
            "azp": "abc",
        },
        ("GET", "orders.example.com", "/orders/1"),
        (200, "allowed"),
    ),
    (
        "auth0",
        {
            "iss": "https://example.eu.auth0.com/",
            "aud": "https://orders.example.com/api",
            "scope": "import:orders",
            "gty": "client-credentials",
        },
        ("POST", "orders.example.com", "/orders/import"),
        (200, "allowed"),
    ),
    (
        "entra-v2",
        {
            "iss": f"https://login.microsoftonline.com/{TENANT}/v2.0",
            "aud": "00000000-0000-0000-0000-0000000c0ffe",
            "scp": "Orders.Read User.Read",
            "tid": TENANT,
            "oid": "11111111-2222-3333-4444-555555555555",
        },
        ("GET", "orders.example.com", "/orders/1"),
        (200, "allowed"),
    ),
    (
        "entra-v2",
        {
            "iss": "https://login.microsoftonline.com/00000000-1111-2222-3333-444444444444/v2.0",
            "aud": "00000000-0000-0000-0000-0000000c0ffe",
            "scp": "Orders.Read",
        },
        ("GET", "orders.example.com", "/orders/1"),
        (401, "issuer_unknown"),
    ),
    (
        "entra-v2",
        {
            "iss": f"https://login.microsoftonline.com/{TENANT}/v2.0",
            "aud": "00000000-0000-0000-0000-0000000c0ffe",
            "scp": "Orders.Read",
            "tid": "00000000-1111-2222-3333-444444444444",
        },
        ("GET", "orders.example.com", "/orders/1"),
        (401, "tenant_mismatch"),
    ),
    (
        "entra-v1",
        {"iss": f"https://sts.windows.net/{TENANT}/", "aud": "api://orders", "scp": "Orders.Read"},
        ("GET", "legacy-orders.example.com", "/orders/1"),
        (200, "allowed"),
    ),
    (
        "cognito",
        {
            "iss": "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123",
            "client_id": "1example23456789",
            "token_use": "access",
            "scope": "orders/read",
            "cognito:groups": ["admins"],
            "username": "alice",
        },
        ("GET", "orders.example.com", "/orders/1"),
        (200, "allowed"),
    ),
    (
        "cognito",
        {
            "iss": "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123",
            "client_id": "1example23456789",
            "token_use": "id",
            "scope": "orders/read",
        },
        ("GET", "orders.example.com", "/orders/1"),
        (401, "required_claim_mismatch"),
    ),
    (
        "google",
        {
            "iss": "accounts.google.com",
            "aud": "123456789012-abc.apps.googleusercontent.com",
            "email": "alice@example.com",
            "email_verified": True,
            "hd": "example.com",
        },
        ("GET", "tools.example.com", "/dashboard"),
        (200, "allowed"),
    ),
    (
        "firebase",
        {
            "iss": "https://securetoken.google.com/my-project",
            "aud": "my-project",
            "user_id": "u1",
            "email_verified": True,
            "auth_time": 1700000000,
            "firebase": {"sign_in_provider": "password"},
        },
        ("GET", "api.example.com", "/v1/me"),
        (200, "allowed"),
    ),
    (
        "firebase",
        {
            "iss": "https://securetoken.google.com/my-project",
            "aud": "my-project",
            "admin": True,
        },
        ("GET", "api.example.com", "/admin/users"),
        (200, "allowed"),
    ),
    (
        "firebase",  # a custom claim set as the string "true" is not the boolean true
        {
            "iss": "https://securetoken.google.com/my-project",
            "aud": "my-project",
            "admin": "true",
        },
        ("GET", "api.example.com", "/admin/users"),
        (403, "claim_mismatch"),
    ),
    (
        "github-actions",
        {
            "iss": "https://token.actions.githubusercontent.com",
            "aud": "deploy.example.com",
            "sub": "repo:example-org/shop:ref:refs/heads/main",
            "repository": "example-org/shop",
            "ref": "refs/heads/main",
            "event_name": "push",
        },
        ("POST", "deploy.example.com", "/deploy/production"),
        (200, "allowed"),
    ),
    (
        "github-actions",
        {
            "iss": "https://token.actions.githubusercontent.com",
            "aud": "deploy.example.com",
            "repository": "example-org/shop",
            "ref": "refs/heads/feature",
            "event_name": "push",
        },
        ("POST", "deploy.example.com", "/deploy/production"),
        (403, "claim_mismatch"),
    ),
    (
        "kubernetes",
        {
            "iss": "https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE",
            "aud": ["orders-api"],
            "sub": "system:serviceaccount:shop:web",
            "kubernetes.io": {"namespace": "shop", "serviceaccount": {"name": "web"}},
        },
        ("GET", "orders.shop.svc.cluster.local", "/internal/stats"),
        (200, "allowed"),
    ),
    (
        "spiffe",
        {
            "iss": "https://oidc-discovery.example.org",
            "aud": ["orders-api"],
            "sub": "spiffe://example.org/ns/shop/sa/web",
        },
        ("GET", "orders.internal.example.org", "/orders/1"),
        (200, "allowed"),
    ),
]


def _with_test_key(recipe: Path, directory: Path) -> dict[str, Any]:
    """The recipe with every issuer's key source replaced by an inline JWKS of a fresh
    RS256 key (the provider's keys cannot be fetched here); returns the private key."""
    private, public = generate_key("RS256", "recipe-test")
    docs = [d for d in yaml.safe_load_all(recipe.read_text()) if d]
    for doc in docs:
        if doc["kind"] in schema.ISSUER_KINDS:
            for source in ("discovery", "jwksUri", "x509CertificatesUri", "fetch"):
                doc["spec"].pop(source, None)
            doc["spec"]["jwks"] = {"keys": [public]}
    (directory / recipe.name).write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return private


@pytest.mark.parametrize(
    ("name", "claims", "request_", "expected"),
    CASES,
    ids=[f"{c[0]}-{c[3][1]}-{i}" for i, c in enumerate(CASES)],
)
def test_recipe_decides_a_provider_shaped_token(
    name: str,
    claims: dict[str, Any],
    request_: tuple[str, str, str],
    expected: tuple[int, str],
    tmp_path: Path,
) -> None:
    private = _with_test_key(DOCS / "recipes" / "yaml" / f"{name}.yaml", tmp_path)
    now = int(time.time())
    token = mint_token(private, {"sub": "subject-1", "iat": now, "exp": now + 600, **claims})
    method, host, path = request_
    result = _authz(
        "check", "--policy-dir", str(tmp_path), "--method", method, "--host", host, "--path", path,
        env={"AUTHZ_TOKEN": token},
    )  # fmt: skip
    answer = json.loads(result.stdout)
    assert (answer["status"], answer["reason"]) == expected, answer


# -- Your first policy, as a newcomer types it ------------------------------------------------

FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.M | re.S)
EXPECT = re.compile(r"#\s*=>\s*(allow|deny)\s+(\d{3})\s+(\w+)\s*$")


def test_first_policy_walkthrough(tmp_path: Path) -> None:
    run_walkthrough(DOCS / "first-policy.md", tmp_path, at_least=6)
    allowed = json.loads((tmp_path / "check-0.json").read_text())
    assert allowed["upstream_headers"]["x-auth-subject"] == "alice"


def test_revocation_walkthrough(tmp_path: Path) -> None:
    run_walkthrough(DOCS / "reference" / "revocation.md", tmp_path, at_least=3)


def test_introspection_example_passes_lint(tmp_path: Path) -> None:
    """The worked example's objects as written (its secret file made up here)."""
    page = (DOCS / "reference" / "introspection.md").read_text()
    [(_, _info, body)] = [f for f in FENCE.findall(page) if f[0] == "yaml" and "title=" in f[1]]
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "introspection").write_text("s3cret\n")
    (tmp_path / "hydra.yaml").write_text(body)
    result = _authz("lint", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.rstrip().endswith("no errors"), result.stdout


def run_walkthrough(page_path: Path, tmp_path: Path, *, at_least: int) -> None:
    """Run a page's titled YAML blocks (written as files) and its `sh` blocks in order;
    every command marked `# => allow|deny STATUS REASON` must answer exactly that."""
    page = page_path.read_text()
    script = ["set -euo pipefail"]
    expectations: list[tuple[str, str, int, str]] = []
    for language, info, body in FENCE.findall(page):
        title = re.search(r'title="([^"]+)"', info)
        if language == "yaml" and title:
            target = tmp_path / title.group(1)
            target.parent.mkdir(parents=True, exist_ok=True)
            script.append(f"cat > {shlex.quote(title.group(1))} <<'PAGE_EOF'\n{body}PAGE_EOF")
        elif language == "sh":
            for line in body.splitlines():
                if not line.strip() or line.startswith("authz serve"):
                    continue  # `authz serve` runs until stopped: covered by tests/e2e/test_serve.py
                expect = EXPECT.search(line)
                if expect is None:
                    script.append(line)
                    continue
                n = len(expectations)
                command = line[: expect.start()].strip()
                script.append(f"{command} > check-{n}.json || true")
                decision, status, reason = expect.groups()
                expectations.append((command, decision, int(status), reason))
    assert len(expectations) >= at_least
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("AUTHZ_TOKEN", None)
    result = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no errors" in result.stdout  # authz lint policies
    for n, (command, decision, status, reason) in enumerate(expectations):
        answer = json.loads((tmp_path / f"check-{n}.json").read_text())
        got = (answer["decision"], answer["status"], answer["reason"])
        assert got == (decision, status, reason), f"{command}: {answer}"
    allowed = json.loads((tmp_path / "check-0.json").read_text())
    assert allowed["upstream_headers"]["x-auth-subject"] == "alice"


def test_protect_a_web_app_policy_passes_lint(tmp_path: Path) -> None:
    """The walkthrough's policy, with the files it names, is one `authz lint` accepts."""
    page = (DOCS / "protect-a-web-app.md").read_text()
    written = 0
    for language, info, body in FENCE.findall(page):
        title = re.search(r'title="([^"]+)"', info)
        if language == "yaml" and title:
            (tmp_path / Path(title.group(1)).name).write_text(body)
            written += 1
    assert written == 1
    (tmp_path / "client-secret").write_text("s3cret\n")
    (tmp_path / "session-keys").write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    result = _authz("lint", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok    AuthzPolicy/shop/web" in result.stdout
