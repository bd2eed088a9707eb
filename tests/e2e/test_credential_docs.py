"""The credential pages' examples work as written: every docs/credentials/yaml file passes
`authz lint`, is shown on its page, and `authz check` decides the requests the page walks
through as it says (with a test key standing in for the identity provider's)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.devtools import generate_key, mint_token
from authz.keys.thumbprint import b64url
from authz.policy import schema
from tests.support.dpop import DPoPClient

DOCS = Path(__file__).resolve().parents[2] / "docs"
EXAMPLES = sorted((DOCS / "credentials" / "yaml").glob("*.yaml"))
BIN = Path(sys.executable).parent


def _authz(*args: str, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [str(BIN / "authz"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_passes_lint_and_is_on_its_page(example: Path, tmp_path: Path) -> None:
    (tmp_path / example.name).write_text(example.read_text())
    result = _authz("lint", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    page = (DOCS / "credentials" / f"{example.stem}.md").read_text()
    assert f'"credentials/yaml/{example.name}"' in page


def _with_test_key(name: str, directory: Path) -> dict[str, Any]:
    private, public = generate_key("ES256", "docs-test")
    docs = [d for d in yaml.safe_load_all((DOCS / "credentials" / "yaml" / name).read_text())]
    for doc in docs:
        if doc["kind"] in schema.ISSUER_KINDS:
            doc["spec"].pop("jwksUri")
            doc["spec"]["jwks"] = {"keys": [public]}
    (directory / name).write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return private


def _token(private: dict[str, Any], **claims: Any) -> str:
    now = int(time.time())
    return mint_token(
        private,
        {"iss": "https://idp.example.com", "sub": "alice", "iat": now, "exp": now + 600, **claims},
    )


def _check(
    directory: Path, host: str, path: str, *headers: str, method: str = "GET"
) -> tuple[int, str]:
    args = [
        "check",
        "--policy-dir",
        str(directory),
        "--method",
        method,
        "--host",
        host,
        "--path",
        path,
    ]
    for header in headers:
        args += ["--header", header]
    answer = json.loads(_authz(*args).stdout)
    return answer["status"], answer["reason"]


def test_dpop_page(tmp_path: Path) -> None:
    private = _with_test_key("dpop.yaml", tmp_path)
    client = DPoPClient("ES256")
    token = _token(
        private, aud="payments-api", scope="payments.write payments.read", cnf={"jkt": client.jkt}
    )
    url = "https://payments.example.com/transfers/42"
    proof = client.proof(token, "POST", url, iat=time.time())
    assert _check(
        tmp_path,
        "payments.example.com",
        "/transfers/42?verbose=1",
        f"Authorization: DPoP {token}",
        f"DPoP: {proof}",
        method="POST",
    ) == (200, "allowed")
    bearer = _token(private, aud="payments-api", scope="payments.write payments.read")
    assert _check(
        tmp_path,
        "payments.example.com",
        "/transfers/42",
        f"Authorization: Bearer {bearer}",
        method="POST",
    ) == (401, "dpop_required")
    assert _check(
        tmp_path, "payments.example.com", "/balance", f"Authorization: Bearer {bearer}"
    ) == (200, "allowed")
    assert _check(
        tmp_path, "payments.example.com", "/balance", f"Authorization: Bearer {token}"
    ) == (401, "dpop_bound_as_bearer")
    elsewhere = client.proof(
        token, "POST", "https://payments.example.com/transfers/43", iat=time.time()
    )
    assert _check(
        tmp_path,
        "payments.example.com",
        "/transfers/42",
        f"Authorization: DPoP {token}",
        f"DPoP: {elsewhere}",
        method="POST",
    ) == (401, "dpop_uri_mismatch")


def test_certificate_bound_page(tmp_path: Path) -> None:
    private = _with_test_key("certificate-bound.yaml", tmp_path)
    der = b"a client certificate's DER bytes stand in here"
    digest = hashlib.sha256(der).digest()
    token = _token(
        private, aud="partner-api", scope="partner.orders", cnf={"x5t#S256": b64url(digest)}
    )
    header = f'x-forwarded-client-cert: Hash={digest.hex()};Subject="CN=partner-7";URI=spiffe://partners/7'
    assert _check(
        tmp_path, "partners.example.com", "/orders/1", f"Authorization: Bearer {token}", header
    ) == (200, "allowed")
    other = f"x-forwarded-client-cert: Hash={hashlib.sha256(b'another').hexdigest()}"
    assert _check(
        tmp_path, "partners.example.com", "/orders/1", f"Authorization: Bearer {token}", other
    ) == (401, "certificate_mismatch")
    assert _check(
        tmp_path, "partners.example.com", "/orders/1", f"Authorization: Bearer {token}"
    ) == (401, "certificate_missing")


def test_internal_tokens_page(tmp_path: Path) -> None:
    private = _with_test_key("internal-tokens.yaml", tmp_path)
    token = _token(
        private, aud="orders-api", scope="orders.read profile", roles=["clerk"], azp="web-app"
    )
    assert _check(
        tmp_path, "orders.example.com", "/orders/1", f"Authorization: Bearer {token}"
    ) == (200, "allowed")
