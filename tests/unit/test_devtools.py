from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from jwt.algorithms import RSAAlgorithm

from authz.devtools import SUPPORTED_ALGORITHMS, generate_key, mint_token, write_key_files
from authz.keys.jwk import parse_jwks
from authz.keys.provider import StaticKeys
from authz.policy.issuer import CompiledIssuer
from authz.request.jose import parse
from authz.request.verify import verify
from tests.support.tokens import ISSUER, NOW, b64url_decode, claims, signing_key

CHEAP = ["ES256", "ES384", "ES512", "EdDSA", "HS256", "HS384", "HS512"]


@pytest.mark.parametrize("alg", [*CHEAP, "RS256", "PS256"])
def test_generated_key_verifies_its_own_tokens(alg: str) -> None:
    # RS256/PS256 come from the shared cache: RSA generation is slow.
    private, public = generate_key(alg, "dev") if alg in CHEAP else signing_key(alg, "dev")
    assert private["kid"] == public["kid"] == "dev"
    assert private["alg"] == public["alg"] == alg
    assert private["use"] == public["use"] == "sig"
    keys, warnings = parse_jwks({"keys": [public]}, frozenset({alg}))
    assert warnings == []
    assert keys.keys[0].algorithms == {alg}
    token = mint_token(private, claims(), typ="at+jwt")
    issuer = CompiledIssuer(
        id="dev", issuer=ISSUER, keys=StaticKeys(keys, "test"), algorithms=frozenset({alg})
    )
    verified = verify(token, {ISSUER: issuer}, NOW)
    assert verified.kid == "dev"
    assert parse(token).header == {"alg": alg, "typ": "at+jwt", "kid": "dev"}


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_public_jwk_has_no_private_material(alg: str) -> None:
    private, public = generate_key(alg, "k")
    assert "d" in private
    assert "d" not in public
    assert json.loads(json.dumps(public)) == public


def test_rsa_keys_are_2048_bit() -> None:
    private, public = signing_key("RS256", "dev")
    assert RSAAlgorithm.from_jwk(public).key_size == 2048
    assert "d" in private
    assert "d" not in public


@pytest.mark.parametrize(("alg", "size"), [("HS256", 32), ("HS384", 48), ("HS512", 64)])
def test_hmac_public_jwk_is_the_secret(alg: str, size: int) -> None:
    private, public = generate_key(alg, "k")
    assert private == public
    assert len(b64url_decode(private["k"])) == size
    assert generate_key(alg, "k")[0]["k"] != private["k"]


def test_every_supported_algorithm_is_listed() -> None:
    assert set(SUPPORTED_ALGORITHMS) == {
        *("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
        *("ES256", "ES384", "ES512", "EdDSA", "HS256", "HS384", "HS512"),
    }


@pytest.mark.parametrize("alg", ["none", "ES256K", "HS1", ""])
def test_unsupported_algorithm(alg: str) -> None:
    with pytest.raises(ValueError, match="unsupported algorithm"):
        generate_key(alg, "k")


def test_mint_header_defaults_and_overrides() -> None:
    private, _ = generate_key("ES256", "k")
    assert parse(mint_token(private, claims())).header == {"alg": "ES256", "kid": "k"}
    header = parse(mint_token(private, claims(), headers={"kid": "other", "x": 1})).header
    assert header == {"alg": "ES256", "kid": "other", "x": 1}
    no_kid = {k: v for k, v in private.items() if k != "kid"}
    assert parse(mint_token(no_kid, claims())).header == {"alg": "ES256"}


def test_mint_with_explicit_alg() -> None:
    private, _ = signing_key("RS256")
    assert parse(mint_token(private, claims(), alg="PS512")).header["alg"] == "PS512"


def test_mint_claims_round_trip() -> None:
    private, _ = generate_key("EdDSA", "k")
    payload = {"iss": ISSUER, "nested": {"a": [1, 2.5, None, "é"]}}
    assert parse(mint_token(private, payload)).claims == payload


def test_mint_rejects_unusable_keys() -> None:
    private, public = generate_key("ES256", "k")
    without_alg = {k: v for k, v in private.items() if k != "alg"}
    with pytest.raises(ValueError, match="unsupported or missing algorithm"):
        mint_token(without_alg, claims())
    with pytest.raises(ValueError, match="a private JWK"):
        mint_token(public, claims())
    with pytest.raises(ValueError, match="RS256 needs a RSA key, not 'EC'"):
        mint_token(private, claims(), alg="RS256")


def test_key_files_are_private_from_the_start_and_never_through_a_symlink(tmp_path: Path) -> None:
    """Issue 11, item 16: the key was written with default permissions, then chmodded, and
    a symlink in its place was followed."""
    private, jwks = write_key_files(tmp_path, "ES256", "k1")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert json.loads(jwks.read_text())["keys"][0]["kid"] == "k1"
    target = tmp_path / "elsewhere"
    (tmp_path / "k2.private.jwk.json").symlink_to(target)
    with pytest.raises(FileExistsError):
        write_key_files(tmp_path, "ES256", "k2")
    assert not target.exists()  # nothing written through the link
    with pytest.raises(FileExistsError):
        write_key_files(tmp_path, "ES256", "k1")  # an existing key is never overwritten
    second, _ = write_key_files(tmp_path, "ES256", "k3")
    assert [k["kid"] for k in json.loads(jwks.read_text())["keys"]] == ["k1", "k3"]
    assert second.name == "k3.private.jwk.json"


def test_an_hmac_secret_never_lands_in_the_public_jwks(tmp_path: Path) -> None:
    secret, verifier = write_key_files(tmp_path, "HS256", "s1")
    assert secret == verifier == tmp_path / "s1.secret.jwks.json"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert json.loads(secret.read_text())["keys"][0]["kty"] == "oct"
    assert not (tmp_path / "jwks.json").exists()
