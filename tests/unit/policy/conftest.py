from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.devtools import generate_key


@pytest.fixture(scope="session")
def es256_jwks() -> dict[str, Any]:
    _private, public = generate_key("ES256", "k1")
    return {"keys": [public]}


def issuer_doc(name: str = "idp", iss: str = "https://idp.example", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "authz.io/v1alpha1",
        "kind": "JWTIssuer",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"issuer": iss, **spec},
    }


def policy_doc(name: str = "api", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "targets": {"hosts": ["*"]},
        "issuers": [{"name": "idp"}],
        "rules": [{"name": "all", "match": {"paths": ["/**"]}}],
    }
    body.update(spec)
    return {
        "apiVersion": "authz.io/v1alpha1",
        "kind": "AuthzPolicy",
        "metadata": {"name": name, "namespace": "default"},
        "spec": body,
    }


def write(path: Path, *docs: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump_all(docs))
    return path
