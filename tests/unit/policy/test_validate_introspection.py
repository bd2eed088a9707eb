"""The introspection block and TokenRevocation as the schema and its cross-field rules see them
(the same rules are CEL in the CRDs: tests/e2e/test_controller.py runs them on the API server)."""

from __future__ import annotations

from typing import Any

import pytest

from authz.policy.validate import PolicyError, validate_document
from tests.support.docs import document, issuer
from tests.support.snapshots import serve

URL = "https://idp.test/oauth2/introspect"


def introspecting(**block: Any) -> dict[str, Any]:
    spec = {"endpoint": URL, **block}
    return issuer(introspection=spec)


def problems(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(PolicyError) as info:
        validate_document(doc, "p.yaml")
    return info.value.problems


BASIC = {"method": "client_secret_basic", "clientId": "rs", "clientSecretFile": "s"}


@pytest.mark.parametrize(
    "client_auth",
    [
        BASIC,
        {
            "method": "client_secret_post",
            "clientId": "rs",
            "clientSecretRef": {"name": "n", "key": "k"},
        },
        {
            "method": "private_key_jwt",
            "clientId": "rs",
            "privateKeyFile": "k.pem",
            "signingAlgorithm": "ES256",
            "keyId": "a",
            "assertionAudience": "https://idp.test",
        },
        {"method": "private_key_jwt", "clientId": "rs", "privateKeyRef": {"name": "n", "key": "k"}},
        {"method": "none"},
    ],
)
def test_client_authentications_that_validate(client_auth: dict[str, Any]) -> None:
    validate_document(introspecting(clientAuth=client_auth), "p.yaml")


@pytest.mark.parametrize(
    ("client_auth", "problem"),
    [
        (
            {"method": "client_secret_basic", "clientId": "rs"},
            "need exactly one of clientSecretFile, clientSecretRef",
        ),
        (
            {**BASIC, "clientSecretRef": {"name": "n", "key": "k"}},
            "need exactly one of clientSecretFile",
        ),
        (
            {"method": "private_key_jwt", "clientId": "rs"},
            "private_key_jwt needs exactly one of privateKeyFile",
        ),
        ({**BASIC, "privateKeyFile": "k"}, "a client secret goes with client_secret_basic"),
        (
            {
                "method": "private_key_jwt",
                "clientId": "rs",
                "privateKeyFile": "k",
                "clientSecretFile": "s",
            },
            "a client secret goes with",
        ),
        ({"method": "none", "clientId": "rs"}, "method none sends no client credentials"),
        ({"method": "none", "clientSecretFile": "s"}, "method none sends no client credentials"),
        ({"method": "client_secret_post", "clientSecretFile": "s"}, "clientId is required"),
        ({**BASIC, "keyId": "k"}, "apply to private_key_jwt only"),
        ({"clientId": "rs"}, "'method' is required"),
        ({**BASIC, "method": "tls_client_auth"}, "is not one of"),
    ],
)
def test_client_authentication_rules(client_auth: dict[str, Any], problem: str) -> None:
    assert any(problem in p for p in problems(introspecting(clientAuth=client_auth)))


def test_an_issuer_may_have_introspection_instead_of_keys() -> None:
    validate_document(introspecting(clientAuth=BASIC), "p.yaml")  # no key source: fine
    both = issuer(introspection={"endpoint": URL, "clientAuth": BASIC}, jwks={"keys": [{}]})
    validate_document(both, "p.yaml")
    neither = issuer()
    del neither["spec"]["jwks"]
    assert any("exactly one key source" in p for p in problems(neither))


def test_the_endpoint_is_https_unless_allowed() -> None:
    doc = introspecting(clientAuth=BASIC, endpoint="http://idp.test/introspect")
    assert any("must use https unless" in p for p in problems(doc))
    validate_document(
        introspecting(clientAuth=BASIC, endpoint="http://idp.test/i", allowInsecureHttp=True),
        "p.yaml",
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cacheSeconds", 3601),
        ("negativeCacheSeconds", -1),
        ("waitMillis", 5001),
        ("timeoutSeconds", 0),
        ("maxInFlight", 0),
        ("tokens", "some"),
        ("endpoint", "ftp://idp.test"),
    ],
)
def test_bounds(field: str, value: Any) -> None:
    assert problems(introspecting(clientAuth=BASIC, **{field: value}))


def revocation(*entries: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return document("TokenRevocation", "r", {"entries": list(entries), **spec}, namespace=None)


T = "2026-12-01T10:00:00Z"


@pytest.mark.parametrize(
    "entry",
    [
        {"jti": "a", "issuedBefore": T},
        {"jti": "a", "expiresAt": T, "issuer": "https://i", "reason": "leaked in a log"},
        {"subject": "alice", "issuedBefore": T},
        {"issuer": "https://i", "issuedBefore": T},
    ],
)
def test_revocation_entries_that_validate(entry: dict[str, Any]) -> None:
    obj = validate_document(revocation(entry), "p.yaml")
    assert obj.key == "TokenRevocation/r"  # cluster-scoped: no namespace


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"issuedBefore": T}, "an entry names a jti, a subject or an issuer"),
        ({"subject": "alice"}, "an entry needs issuedBefore"),
        ({"jti": "a"}, "an entry needs issuedBefore"),
        (
            {"subject": "alice", "issuedBefore": T, "expiresAt": T},
            "expiresAt applies to jti entries only",
        ),
        ({"jti": "a", "expiresAt": T, "kid": "x"}, "unknown field"),
    ],
)
def test_revocation_entry_rules(entry: dict[str, Any], problem: str) -> None:
    assert any(problem in p for p in problems(revocation(entry)))


@pytest.mark.parametrize(
    ("client_auth", "problem"),
    [
        (
            {
                "method": "client_secret_post",
                "clientId": "rs",
                "clientSecretRef": {"name": "s", "key": "k"},
            },
            "Kubernetes Secrets are read in cluster mode only",
        ),
        (
            {
                "method": "client_secret_post",
                "clientId": "rs",
                "clientSecretFile": "/nonexistent/secret",
            },
            "cannot read /nonexistent/secret",
        ),
        (
            {"method": "private_key_jwt", "clientId": "rs", "privateKeyFile": "PEMFILE"},
            "not an unencrypted PEM private key",
        ),
    ],
)
def test_unusable_credentials_are_refused_when_loaded(
    client_auth: dict[str, Any], problem: str, tmp_path: Any
) -> None:
    (tmp_path / "key.pem").write_text(
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    )
    if client_auth.get("privateKeyFile") == "PEMFILE":
        client_auth = {**client_auth, "privateKeyFile": str(tmp_path / "key.pem")}
    status = serve(introspecting(clientAuth=client_auth)).statuses["JWTIssuer/default/idp"]
    assert not status.accepted
    assert any(problem in p for p in status.problems), status.problems
