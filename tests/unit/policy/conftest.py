from __future__ import annotations

from typing import Any

import pytest

from authz.devtools import generate_key
from tests.support.docs import document


@pytest.fixture(scope="session")
def es256_jwks() -> dict[str, Any]:
    _private, public = generate_key("ES256", "k1")
    return {"keys": [public]}


def issuer_doc(name: str = "idp", iss: str = "https://idp.example", **spec: Any) -> dict[str, Any]:
    """An issuer with exactly the spec given: validation tests build incomplete ones."""
    return document("JWTIssuer", name, {"issuer": iss, **spec})


def policy_doc(name: str = "api", **spec: Any) -> dict[str, Any]:
    """A policy for every host trusting `idp`; `spec` replaces whole fields."""
    body: dict[str, Any] = {
        "targets": {"hosts": ["*"]},
        "issuers": [{"name": "idp"}],
        "rules": [{"name": "all", "match": {"paths": ["/**"]}}],
    }
    body.update(spec)
    return document("AuthzPolicy", name, body)
