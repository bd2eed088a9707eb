"""Client authentication to an introspection or token endpoint, as the endpoint checks it."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from authz.keys.client_auth import (
    ASSERTION_TYPE,
    ClientAuth,
    ClientAuthError,
    FileSecret,
    InlineSecret,
)
from tests.support.tokens import signing_key

ENDPOINT = "https://idp.test/oauth2/introspect"


def pem(key: object) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def test_basic_encodes_id_and_secret_as_rfc_6749_asks() -> None:
    """RFC 6749 2.3.1: each part form-urlencoded, then Basic; a `:` in the id survives."""
    auth = ClientAuth("client_secret_basic", "a:b c", InlineSecret(b"p@ss/word+"))
    form, headers = auth.apply(ENDPOINT, 0)
    assert form == {}
    decoded = base64.b64decode(headers["Authorization"].removeprefix("Basic ")).decode()
    assert decoded == "a%3Ab+c:p%40ss%2Fword%2B"


def test_post_sends_the_credentials_as_form_fields() -> None:
    auth = ClientAuth("client_secret_post", "rs", InlineSecret(b"s3cret"))
    assert auth.apply(ENDPOINT, 0) == ({"client_id": "rs", "client_secret": "s3cret"}, {})


def test_none_sends_nothing() -> None:
    assert ClientAuth("none").apply(ENDPOINT, 0) == ({}, {})


@pytest.mark.parametrize(
    ("key", "alg"),
    [
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
        (ec.generate_private_key(ec.SECP256R1()), "ES256"),
        (ec.generate_private_key(ec.SECP384R1()), "ES384"),
        (ed25519.Ed25519PrivateKey.generate(), "EdDSA"),
    ],
)
def test_private_key_jwt_assertion_verifies_with_pyjwt(key: object, alg: str) -> None:
    """RFC 7523 2.2: iss = sub = client id, aud = the endpoint, a fresh jti, short-lived."""
    auth = ClientAuth("private_key_jwt", "rs", InlineSecret(pem(key)), key_id="k7")
    now = time.time()
    form, headers = auth.apply(ENDPOINT, now)
    again, _ = auth.apply(ENDPOINT, now)
    assert headers == {}
    assert form["client_assertion_type"] == ASSERTION_TYPE and form["client_id"] == "rs"
    public = key.public_key()  # type: ignore[attr-defined]
    claims = jwt.decode(
        form["client_assertion"], public, algorithms=[alg], audience=ENDPOINT, issuer="rs"
    )
    assert claims["sub"] == "rs" and claims["exp"] - claims["iat"] == 60
    assert jwt.get_unverified_header(form["client_assertion"])["kid"] == "k7"
    assert (
        jwt.decode(again["client_assertion"], public, algorithms=[alg], audience=ENDPOINT)["jti"]
        != claims["jti"]
    )


def test_private_key_jwt_signs_with_a_key_already_parsed() -> None:
    """A login block's private JWK, parsed and checked when the policy is built."""
    private, public = signing_key("ES256", "client-key")
    auth = ClientAuth(
        "private_key_jwt", "web", algorithm="ES256", key_id="client-key", key=jwt.PyJWK(private).key
    )
    form, _ = auth.apply("https://op.example/token", time.time())
    assert jwt.get_unverified_header(form["client_assertion"])["kid"] == "client-key"
    claims = jwt.decode(
        form["client_assertion"],
        jwt.PyJWK(public).key,
        algorithms=["ES256"],
        audience="https://op.example/token",
    )
    assert claims["iss"] == claims["sub"] == "web" and claims["exp"] - claims["iat"] == 60
    assert "key=" not in repr(auth)


def test_private_key_jwt_audience_and_algorithm_can_be_chosen() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    auth = ClientAuth(
        "private_key_jwt", "rs", InlineSecret(pem(key)), algorithm="PS256", audience="https://i"
    )
    form, _ = auth.apply(ENDPOINT, time.time())
    jwt.decode(
        form["client_assertion"], key.public_key(), algorithms=["PS256"], audience="https://i"
    )


@pytest.mark.parametrize(
    ("secret", "algorithm", "message"),
    [
        (
            b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
            None,
            "not an unencrypted PEM",
        ),
        (pem(ec.generate_private_key(ec.SECP256R1())), "RS256", "does not fit"),
        (pem(ec.generate_private_key(ec.SECP256R1())), "ES384", "does not fit"),
        (pem(ed25519.Ed25519PrivateKey.generate()), "ES256", "does not fit"),
    ],
)
def test_unusable_private_keys_fail_at_load(
    secret: bytes, algorithm: str | None, message: str
) -> None:
    auth = ClientAuth("private_key_jwt", "rs", InlineSecret(secret), algorithm=algorithm)
    with pytest.raises(ClientAuthError, match=message) as info:
        auth.check()
    assert "not a key" not in str(info.value)


def test_a_file_secret_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("first\n")
    secret = FileSecret(path)
    assert secret.value() == b"first"
    path.write_text("second-and-longer\n")
    assert secret.value() == b"second-and-longer"
    path.unlink()
    with pytest.raises(ClientAuthError, match="cannot read"):
        secret.value()
    path.write_text("\n")
    with pytest.raises(ClientAuthError, match="is empty"):
        secret.value()


def test_secrets_never_show_in_a_repr(tmp_path: Path) -> None:
    auth = ClientAuth("client_secret_post", "rs", InlineSecret(b"hunter2"))
    assert "hunter2" not in repr(auth)
    (tmp_path / "s").write_text("hunter3")
    assert "hunter3" not in repr(ClientAuth("client_secret_post", "rs", FileSecret(tmp_path / "s")))
