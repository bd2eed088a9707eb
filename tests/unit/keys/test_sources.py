"""Reading key documents: discovery, X.509 maps, PEM keys, HMAC secrets, refresh timing."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from authz.keys.fetch import FetchError, FetchResult
from authz.keys.jwk import JWKSError, verify_signature
from authz.keys.sources import (
    discovery_url,
    hmac_key_set,
    jwks_uri_from_discovery,
    parse_remote,
    parse_x509_map,
    pem_key_set,
    url_problem,
)
from tests.support.keyserver import fetch_settings, self_signed_cert_pem

ES = frozenset({"ES256"})


def pem(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.mark.parametrize(
    ("issuer", "url"),
    [
        ("https://idp.example", "https://idp.example/.well-known/openid-configuration"),
        ("https://t.auth0.com/", "https://t.auth0.com/.well-known/openid-configuration"),
        ("https://kc/realms/r", "https://kc/realms/r/.well-known/openid-configuration"),
    ],
)
def test_discovery_url(issuer: str, url: str) -> None:
    assert discovery_url(issuer) == url


def test_discovery_document_must_name_exactly_our_issuer() -> None:
    doc = {"issuer": "https://idp.example", "jwks_uri": "https://idp.example/keys"}
    assert jwks_uri_from_discovery(doc, "https://idp.example", False) == "https://idp.example/keys"
    for configured in ("https://idp.example/", "https://IDP.example", "https://other.example"):
        with pytest.raises(FetchError) as info:
            jwks_uri_from_discovery(doc, configured, False)
        assert info.value.result == FetchResult.ISSUER_MISMATCH


@pytest.mark.parametrize(
    ("doc", "allow_http", "message"),
    [
        ([], False, "not a JSON object"),
        ({"issuer": "https://i"}, False, "no jwks_uri"),
        ({"issuer": "https://i", "jwks_uri": 3}, False, "no jwks_uri"),
        ({"issuer": "https://i", "jwks_uri": "http://i/keys"}, False, "plain http"),
        ({"issuer": "https://i", "jwks_uri": "/keys"}, True, "not an absolute"),
    ],
)
def test_unusable_discovery_documents(doc: object, allow_http: bool, message: str) -> None:
    with pytest.raises(FetchError) as info:
        jwks_uri_from_discovery(doc, "https://i", allow_http)
    assert info.value.result == FetchResult.INVALID and message in info.value.message


def test_url_problems() -> None:
    assert url_problem("https://idp.example/keys", False) is None
    assert url_problem("http://127.0.0.1:8080/keys", True) is None
    assert "plain http" in (url_problem("http://idp/keys", False) or "")
    assert "credentials" in (url_problem("https://u:p@idp/keys", False) or "")
    assert "not an absolute" in (url_problem("ftp://idp/keys", True) or "")


def test_x509_map_skips_unusable_entries() -> None:
    good = ec.generate_private_key(ec.SECP256R1())
    other_curve = ec.generate_private_key(ec.SECP384R1())
    doc = {
        "a": self_signed_cert_pem(good),
        "b": self_signed_cert_pem(other_curve),
        "c": "not a certificate",
        "d": 7,
    }
    keys, warnings = parse_x509_map(doc, ES)
    assert keys.kids == ("a",)
    assert [w.split(":")[0] for w in warnings] == ["'b'", "'c'", "'d'"]
    with pytest.raises(JWKSError, match="certificate map has no usable key"):
        parse_x509_map({"c": "x"}, ES)
    with pytest.raises(JWKSError, match="must be a JSON object"):
        parse_x509_map([], ES)


def test_remote_parse_errors_are_invalid_results() -> None:
    with pytest.raises(FetchError) as info:
        parse_remote("jwksUri", {"keys": "no"}, ES)
    assert info.value.result == FetchResult.INVALID
    with pytest.raises(FetchError):
        parse_remote("x509", [], ES)


def test_a_well_formed_document_without_usable_keys_is_an_answer() -> None:
    """Issue 11, item 14: `{"keys": []}` is how an IdP says it signs with no key any more;
    it takes effect at once (only errors keep the last good keys)."""
    for kind, doc in (("jwksUri", {"keys": []}), ("x509", {"kid": "not a certificate"})):
        keys, warnings = parse_remote(kind, doc, ES)  # type: ignore[arg-type]
        assert keys.keys == () and "no usable key" in warnings[-1]


def test_pem_keys_keep_their_kids() -> None:
    one, two = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    keys = pem_key_set([("one", pem(one)), (None, pem(two).encode())], ES)
    assert keys.kids == ("one",)
    assert len(keys.candidates("one", "ES256")) == 1
    assert len(keys.candidates(None, "ES256")) == 2  # a token without kid tries both


def test_pem_keys_are_strict() -> None:
    one, two = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(JWKSError, match=r"\[1\]: not a PEM public key"):
        pem_key_set([("a", pem(one)), ("b", "garbage")], ES)
    with pytest.raises(JWKSError, match="names different keys"):
        pem_key_set([("a", pem(one)), ("a", pem(two))], ES)
    with pytest.raises(JWKSError, match="no allowed algorithm"):
        pem_key_set([("a", pem(one))], frozenset({"RS256"}))


def test_hmac_secret() -> None:
    secret = b"s" * 48
    keys = hmac_key_set(secret, frozenset({"HS256", "HS384"}))
    [key] = keys.keys
    assert key.kid is None and key.algorithms == {"HS256", "HS384"}
    mac = hmac.new(secret, b"a.b", hashlib.sha256).digest()
    assert verify_signature(key, "HS256", b"a.b", mac)
    with pytest.raises(JWKSError, match="below the 32 HS256 needs"):
        hmac_key_set(b"short", frozenset({"HS256"}))


@pytest.mark.parametrize(("max_age", "expected"), [(None, 600), (5, 60), (900, 900), (10**6, 3600)])
def test_refresh_honours_max_age_within_bounds(max_age: int | None, expected: int) -> None:
    assert fetch_settings().refresh_after(max_age) == expected


def test_retries_back_off_up_to_a_minute() -> None:
    assert [fetch_settings().retry_after(n) for n in range(1, 10)] == [
        1,
        2,
        4,
        8,
        16,
        32,
        60,
        60,
        60,
    ]
    assert fetch_settings(refresh=5).retry_after(8) == 5
