from __future__ import annotations

import base64
import datetime
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm, get_default_algorithms

from authz.keys.jwk import (
    HMAC_ALGORITHMS,
    RSA_ALGORITHMS,
    JWKSError,
    KeySet,
    VerifyingKey,
    parse_jwk,
    parse_jwks,
    parse_pem_public_key,
    parse_x509_cert,
    verify_signature,
)
from tests.support.tokens import b64url, signing_key

ALL = RSA_ALGORITHMS | HMAC_ALGORITHMS | {"ES256", "ES384", "ES512", "EdDSA"}
MESSAGE = b"header.payload"
PYJWT = get_default_algorithms()


def public(alg: str, kid: str = "k1", /, **changes: Any) -> dict[str, Any]:
    """The public JWK of the (alg, kid) test key, with members changed (None removes one)."""
    jwk = {**signing_key(alg, kid)[1], **changes}
    return {k: v for k, v in jwk.items() if v is not None}


def sign(alg: str, kid: str = "k1", message: bytes = MESSAGE) -> bytes:
    algorithm = PYJWT[alg]
    return algorithm.sign(message, algorithm.from_jwk(signing_key(alg, kid)[0]))


def only_key(jwk: dict[str, Any], allowed: frozenset[str] = ALL) -> VerifyingKey:
    keys, warnings = parse_jwks({"keys": [jwk]}, allowed)
    assert warnings == []
    assert len(keys.keys) == 1
    return keys.keys[0]


def unusable(jwk: object, allowed: frozenset[str] = ALL) -> str:
    """Parse `jwk` next to a good key; assert it was skipped and return the warning."""
    keys, warnings = parse_jwks({"keys": [public("ES256", "good"), jwk]}, allowed)
    assert keys.kids == ("good",)
    assert len(warnings) == 1
    assert warnings[0].startswith("keys[1]")
    return warnings[0]


# --- algorithms derived from the key -----------------------------------------------------


@pytest.mark.parametrize(
    ("alg", "expected"),
    [
        ("RS256", RSA_ALGORITHMS),
        ("ES256", {"ES256"}),
        ("ES384", {"ES384"}),
        ("ES512", {"ES512"}),
        ("EdDSA", {"EdDSA"}),
        ("HS256", {"HS256"}),  # a 32-byte secret is too short for HS384/HS512
    ],
)
def test_algorithms_derived_from_kty_and_crv(alg: str, expected: set[str]) -> None:
    key = only_key(public(alg, alg=None))
    assert key.algorithms == expected
    assert key.kid == "k1"


def test_jwk_alg_narrows_algorithms() -> None:
    assert only_key(public("PS384")).algorithms == {"PS384"}


def test_allowlist_narrows_algorithms() -> None:
    key = only_key(public("RS256", alg=None), frozenset({"RS256", "ES256", "HS256"}))
    assert key.algorithms == {"RS256"}
    assert key.kty == "RSA"


def test_long_oct_key_offers_every_hs_algorithm() -> None:
    jwk = {"kty": "oct", "k": b64url(b"s" * 64)}
    assert only_key(jwk).algorithms == HMAC_ALGORITHMS
    assert only_key({**jwk, "k": b64url(b"s" * 48)}).algorithms == {"HS256", "HS384"}


def test_ed448_key() -> None:
    private = ed448.Ed448PrivateKey.generate()
    key = only_key({**OKPAlgorithm.to_jwk(private.public_key(), as_dict=True), "kid": "ed448"})
    assert (key.kty, key.algorithms) == ("OKP", {"EdDSA"})
    assert verify_signature(key, "EdDSA", MESSAGE, private.sign(MESSAGE))


def test_member_padding_is_tolerated() -> None:
    jwk = public("ES256")
    padded = {**jwk, "x": jwk["x"] + "=" * (-len(jwk["x"]) % 4)}
    assert only_key(padded).key == only_key(jwk).key


# --- unusable keys are skipped with a warning ------------------------------------------------


@pytest.mark.parametrize(
    ("jwk", "why"),
    [
        (public("RS256", use="enc"), "'use' is 'enc'"),
        (public("RS256", key_ops=["encrypt"]), "'key_ops' does not include 'verify'"),
        (public("RS256", key_ops="verify"), "'key_ops' is not an array of strings"),
        (public("RS256", kid=7), "'kid' is not a string"),
        (public("RS256", alg=["RS256"]), "'alg' is not a string"),
        (public("RS256", kty="RSA-PSS"), "unsupported kty 'RSA-PSS'"),
        (public("RS256", kty=None), "unsupported kty None"),
        (public("RS256", n="not+base64/"), "member 'n' missing or not base64url"),
        (public("RS256", e=None), "member 'e' missing"),
        (public("RS256", e=65537), "member 'e' missing or not base64url"),
        (public("RS256", e="AQ"), "invalid RSA key"),  # e = 1
        (public("ES256", crv="P-192"), "unsupported EC crv 'P-192'"),
        (public("ES256", crv="secp256k1"), "unsupported EC crv 'secp256k1'"),
        (public("ES256", crv="P-384"), "EC coordinates must be 48 bytes"),
        (public("ES256", y=b64url(b"\x01" * 32)), "invalid EC key"),  # not on the curve
        (public("ES256", x="A"), "not valid base64url"),
        (public("EdDSA", crv="X25519"), "unsupported OKP crv 'X25519'"),
        (public("EdDSA", x=b64url(b"\x01" * 31)), "invalid Ed25519 key"),
        (public("HS256", k=b64url(b"s" * 16)), "oct key is 16 bytes"),
        (public("HS256", k=""), "member 'k' missing or not base64url"),
        ("RS256", "not a JSON object"),
        (public("ES256", alg="RS256"), "no allowed algorithm"),
        (public("ES256", alg="ES384"), "no allowed algorithm"),
    ],
)
def test_unusable_key_is_skipped(jwk: object, why: str) -> None:
    assert why in unusable(jwk)


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_private_key_material_is_rejected(alg: str) -> None:
    private = signing_key(alg)[0]
    assert "private key material in JWKS" in unusable(private)


def test_rsa_key_below_2048_bits_is_rejected() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()  # noqa: S505
    assert "RSA key is 1024 bits" in unusable(RSAAlgorithm.to_jwk(small, as_dict=True))


def test_oct_key_needs_an_hs_algorithm_in_the_allowlist() -> None:
    asymmetric = ALL - HMAC_ALGORITHMS
    assert "no allowed algorithm" in unusable(public("HS256"), asymmetric)


def test_public_keys_are_never_hmac_secrets() -> None:
    with pytest.raises(JWKSError, match="no allowed algorithm"):
        parse_jwks({"keys": [public("RS256", alg=None)]}, HMAC_ALGORITHMS)
    with pytest.raises(JWKSError, match="no allowed algorithm"):
        parse_jwks({"keys": [public("RS256", alg="HS256")]}, ALL)


def test_warning_names_index_and_kid() -> None:
    warning = unusable(public("RS256", kid="enc-key", use="enc"))
    assert warning == "keys[1] (kid 'enc-key'): 'use' is 'enc', not 'sig'"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "JWKS must be a JSON object"),
        ({}, "JWKS must have a 'keys' array"),
        ({"keys": {}}, "JWKS must have a 'keys' array"),
        ({"keys": []}, "the 'keys' array is empty"),
        ({"keys": [{"kty": "RSA", "use": "enc"}]}, "keys[0]: 'use' is 'enc'"),
    ],
)
def test_malformed_or_keyless_document_raises(doc: object, message: str) -> None:
    with pytest.raises(JWKSError) as excinfo:
        parse_jwks(doc, ALL)
    assert message in str(excinfo.value)


def test_parse_jwk_raises_for_one_key() -> None:
    with pytest.raises(JWKSError, match="private key material"):
        parse_jwk(signing_key("ES256")[0], ALL)


# --- KeySet ----------------------------------------------------------------------------------


def keyset(*jwks: dict[str, Any]) -> KeySet:
    keys, warnings = parse_jwks({"keys": list(jwks)}, ALL)
    assert warnings == []
    return keys


def test_candidates_by_kid_and_alg() -> None:
    ks = keyset(public("ES256", "a"), public("ES256", "b"), public("RS256", "c", alg=None))
    assert [k.kid for k in ks.candidates("a", "ES256")] == ["a"]
    assert [k.kid for k in ks.candidates("c", "PS512")] == ["c"]
    assert ks.candidates("a", "RS256") == ()
    assert ks.candidates("c", "ES256") == ()


def test_unknown_kid_never_falls_back() -> None:
    ks = keyset(public("ES256", "a"), public("ES256", alg="ES256", kid=None))
    assert ks.candidates("zzz", "ES256") == ()


def test_no_kid_gets_every_key_for_the_alg() -> None:
    ks = keyset(public("ES256", "a"), public("ES256", "b"), public("EdDSA", "c"))
    assert [k.kid for k in ks.candidates(None, "ES256")] == ["a", "b"]


def test_same_kid_on_several_keys_keeps_all() -> None:
    ks = keyset(public("ES256", "dup"), {**public("EdDSA"), "kid": "dup"})
    assert [k.kty for k in ks.candidates("dup", "ES256")] == ["EC"]
    assert [k.kty for k in ks.candidates("dup", "EdDSA")] == ["OKP"]
    assert ks.kids == ("dup",)


def test_kids_in_document_order() -> None:
    ks = keyset(public("ES256", "b"), public("ES256", alg="ES256", kid=None), public("ES256", "a"))
    assert ks.kids == ("b", "a")


def test_same_kid_for_different_keys_of_one_algorithm_is_dropped() -> None:
    one, other = public("ES256", "dup"), public("ES256", "k2")
    keys, warnings = parse_jwks(
        {"keys": [one, {**other, "kid": "dup"}, public("ES256", "ok")]}, ALL
    )
    assert keys.kids == ("ok",)
    assert warnings == ["kid 'dup' names different keys for one algorithm; none is used"]
    copies, warnings = parse_jwks({"keys": [one, dict(one)]}, ALL)
    assert copies.kids == ("dup",) and warnings == []


def test_mixed_symmetric_and_asymmetric_sets_are_refused() -> None:
    secret = {"kty": "oct", "kid": "h", "k": b64url(b"s" * 32)}
    with pytest.raises(JWKSError, match="mixes symmetric"):
        parse_jwks({"keys": [secret, public("ES256", "e")]}, ALL)


def test_roca_weak_rsa_keys_are_refused() -> None:
    # Wycheproof jws_rsa_roca_key: a modulus from the vulnerable Infineon generator
    corpus = json.loads(
        (Path(__file__).resolve().parents[4] / "shared/conformance/wycheproof_jws.json").read_text()
    )
    [entry] = [e for e in corpus["entries"] if "roca" in e["source"]["symbol"]]
    with pytest.raises(JWKSError, match="ROCA"):
        parse_jwks(entry["keys"], ALL)


def test_empty_keyset() -> None:
    assert KeySet.empty().keys == ()
    assert KeySet.empty().candidates(None, "RS256") == ()
    assert KeySet.empty() == KeySet()


def test_keysets_compare_by_key_material_and_hash() -> None:
    first = keyset(public("RS256"), public("ES256", "e"))
    second = keyset(public("RS256"), public("ES256", "e"))
    other = keyset(public("RS256", "k2", kid="k1"), public("ES256", "e"))
    assert first == second
    assert hash(first) == hash(second)
    assert first != other


# --- PEM and X.509 ---------------------------------------------------------------------------


def pem_of(alg: str) -> bytes:
    algorithm = PYJWT[alg]
    key = algorithm.from_jwk(signing_key(alg)[1])
    return bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


@pytest.mark.parametrize(
    ("alg", "kty", "expected"),
    [("RS256", "RSA", RSA_ALGORITHMS), ("ES384", "EC", {"ES384"}), ("EdDSA", "OKP", {"EdDSA"})],
)
def test_pem_public_key(alg: str, kty: str, expected: frozenset[str]) -> None:
    key = parse_pem_public_key(pem_of(alg).decode(), "pem", ALL)
    assert (key.kid, key.kty, key.algorithms) == ("pem", kty, expected)
    assert verify_signature(key, alg, MESSAGE, sign(alg))


def test_pem_allowlist_applies() -> None:
    assert parse_pem_public_key(pem_of("RS256"), None, frozenset({"PS256"})).algorithms == {"PS256"}
    with pytest.raises(JWKSError, match="no allowed algorithm"):
        parse_pem_public_key(pem_of("RS256"), None, HMAC_ALGORITHMS)


def test_pem_private_key_or_garbage_is_rejected() -> None:
    private = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    for pem in (private, b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", b""):
        with pytest.raises(JWKSError, match="not a PEM public key"):
            parse_pem_public_key(pem, None, ALL)


def test_x509_certificate() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer.test")])
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=1))
        .sign(private, hashes.SHA256())
    )
    key = parse_x509_cert(cert.public_bytes(serialization.Encoding.PEM), "cert", ALL)
    assert (key.kid, key.kty, key.algorithms) == ("cert", "EC", {"ES256"})
    assert key.key == private.public_key()
    with pytest.raises(JWKSError, match=r"not a PEM X\.509 certificate"):
        parse_x509_cert(pem_of("ES256"), None, ALL)


# --- verify_signature ------------------------------------------------------------------------

SIGNING_ALGORITHMS = sorted(ALL)


@pytest.mark.parametrize("alg", SIGNING_ALGORITHMS)
def test_valid_signature(alg: str) -> None:
    key = only_key(public(alg))
    assert verify_signature(key, alg, MESSAGE, sign(alg))


@pytest.mark.parametrize("alg", SIGNING_ALGORITHMS)
def test_bad_signatures_return_false(alg: str) -> None:
    key = only_key(public(alg))
    good = sign(alg)
    flipped = bytes([good[0] ^ 1]) + good[1:]
    for bad in (flipped, good[:-1], good + b"\0", b"", b"\0" * len(good)):
        assert verify_signature(key, alg, MESSAGE, bad) is False
    assert verify_signature(key, alg, MESSAGE + b"x", good) is False


def test_alg_outside_key_algorithms_is_refused() -> None:
    rsa_key = only_key(public("RS256"))
    assert verify_signature(rsa_key, "PS256", MESSAGE, sign("PS256")) is False
    assert verify_signature(rsa_key, "RS384", MESSAGE, sign("RS384")) is False
    ec_key = only_key(public("ES256", alg=None))
    assert verify_signature(ec_key, "ES384", MESSAGE, sign("ES256")) is False


def test_rsa_key_is_not_an_hmac_secret() -> None:
    """The classic confusion: HS256 keyed with the RSA public key's PEM."""
    rsa_key = only_key(public("RS256", alg=None))
    forged = PYJWT["HS256"].sign(MESSAGE, pem_of("RS256"))
    assert verify_signature(rsa_key, "HS256", MESSAGE, forged) is False


@pytest.mark.parametrize(
    ("alg", "size", "digest"),
    [
        ("ES256", 32, hashes.SHA256()),
        ("ES384", 48, hashes.SHA384()),
        ("ES512", 66, hashes.SHA512()),
    ],
)
def test_ecdsa_needs_raw_fixed_size_signature(alg: str, size: int, digest: Any) -> None:
    key = only_key(public(alg))
    raw = sign(alg)
    assert len(raw) == 2 * size
    assert verify_signature(key, alg, MESSAGE, raw)
    der = PYJWT[alg].from_jwk(signing_key(alg)[0]).sign(MESSAGE, ec.ECDSA(digest))
    assert verify_signature(key, alg, MESSAGE, der) is False
    assert verify_signature(key, alg, MESSAGE, b"\0" + raw) is False
    assert verify_signature(key, alg, MESSAGE, raw[1:]) is False
    assert verify_signature(key, alg, MESSAGE, b"\0" * (2 * size)) is False  # r = s = 0


def test_ecdsa_r_or_s_at_the_group_order_is_refused() -> None:
    """r or s equal to n (the order) is out of range; a lax verifier could reduce it to 0."""
    key = only_key(public("ES256"))
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    raw = sign("ES256")
    s = int.from_bytes(raw[32:], "big")
    assert verify_signature(key, "ES256", MESSAGE, n.to_bytes(32, "big") + raw[32:]) is False
    # (r, n - s) is the other valid signature for the same r; (r, s + n) is out of range.
    assert verify_signature(key, "ES256", MESSAGE, raw[:32] + (n - s).to_bytes(32, "big"))
    assert (
        verify_signature(key, "ES256", MESSAGE, raw[:32] + (2**256 - 1).to_bytes(32, "big"))
        is False
    )


@pytest.mark.parametrize(
    ("exponent", "accepted"),
    [(65537, True), (3, True), (2**31 - 1, True), (2**31 + 1, False), (2**1024 + 1, False)],
)
def test_rsa_exponents_outside_what_issuers_use_are_refused(exponent: int, accepted: bool) -> None:
    """Issue 11, item 13: a key with a huge public exponent cost ~100x CPU per junk token."""
    public = dict(signing_key("RS256", "e")[1])
    public["e"] = (
        base64.urlsafe_b64encode(exponent.to_bytes((exponent.bit_length() + 7) // 8, "big"))
        .rstrip(b"=")
        .decode()
    )
    if accepted:
        assert parse_jwk(public, frozenset({"RS256"})).kty == "RSA"
    else:
        with pytest.raises(JWKSError, match="public exponent"):
            parse_jwk(public, frozenset({"RS256"}))
