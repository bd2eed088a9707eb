"""authz's signing keys: a directory (or mounted Secret) of private JWKs, the active one,
rotation with overlap, and nothing secret in what is published or reported."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jwt
import pytest

from authz.devtools import generate_key
from authz.keys.signing import (
    NoSigningKey,
    SigningKeys,
    discovery_document,
    load_directory,
    parse_signing_key,
)


def _write(directory: Path, name: str, alg: str, kid: str) -> dict[str, str]:
    private, _ = generate_key(alg, kid)
    (directory / name).write_text(json.dumps(private))
    return private


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_tokens_verify_with_the_published_key(tmp_path: Path, alg: str) -> None:
    _write(tmp_path, "k1.json", alg, "k1")
    keys = SigningKeys(tmp_path)
    token = keys.signer().sign({"sub": "alice", "aud": "orders"})
    published = keys.current().jwks()["keys"]
    assert [k["kid"] for k in published] == ["k1"]
    assert all("d" not in k for k in published)
    public = jwt.PyJWK(published[0]).key
    claims = jwt.decode(token, public, algorithms=[alg], audience="orders")
    assert claims["sub"] == "alice"
    assert jwt.get_unverified_header(token) == {"alg": alg, "kid": "k1", "typ": "JWT"}


def test_the_last_kid_signs_unless_active_names_one(tmp_path: Path) -> None:
    _write(tmp_path, "a.json", "ES256", "2024-01")
    _write(tmp_path, "b.json", "EdDSA", "2025-01")
    loaded = load_directory(tmp_path)
    assert loaded.active is not None and loaded.active.kid == "2025-01"
    (tmp_path / "active").write_text("2024-01\n")
    loaded = load_directory(tmp_path)
    assert loaded.active is not None and loaded.active.kid == "2024-01"
    assert [k.kid for k in loaded.keys] == ["2024-01", "2025-01"]  # both published
    (tmp_path / "active").write_text("gone")
    loaded = load_directory(tmp_path)
    assert loaded.active is None and "names kid 'gone'" in loaded.problems[0]


def test_rotation_is_seen_on_reload(tmp_path: Path) -> None:
    _write(tmp_path, "old.json", "ES256", "k1")
    keys = SigningKeys(tmp_path)
    assert not keys.reload()
    _write(tmp_path, "new.json", "ES256", "k2")
    assert keys.reload()
    assert keys.signer().kid == "k2"
    assert [k["kid"] for k in keys.current().jwks()["keys"]] == ["k1", "k2"]
    (tmp_path / "old.json").unlink()
    assert keys.reload()
    assert [k["kid"] for k in keys.current().jwks()["keys"]] == ["k2"]


def test_a_mounted_secret_layout_is_read(tmp_path: Path) -> None:
    """kubelet mounts a Secret as symlinks into a hidden `..data` directory."""
    data = tmp_path / "..2025_01_01"
    data.mkdir()
    _write(data, "signing.json", "EdDSA", "s1")
    os.symlink(data.name, tmp_path / "..data")
    os.symlink("..data/signing.json", tmp_path / "signing.json")
    loaded = load_directory(tmp_path)
    assert [k.kid for k in loaded.keys] == ["s1"] and not loaded.problems


def test_unusable_files_are_reported_without_their_content(tmp_path: Path) -> None:
    private = _write(tmp_path, "rsa.json", "RS256", "r1")
    _, public = generate_key("ES256", "pub")
    (tmp_path / "public.json").write_text(json.dumps(public))
    (tmp_path / "garbage.json").write_text("not json " + private["d"])
    _write(tmp_path, "ok.json", "ES256", "ok")
    _write(tmp_path, "dup.json", "ES256", "ok")
    loaded = load_directory(tmp_path)
    assert [k.kid for k in loaded.keys] == ["ok"]
    text = "; ".join(loaded.problems)
    for name in ("rsa.json", "public.json", "garbage.json"):
        assert name in text
    assert "in another file too" in text
    assert private["d"] not in text and private["d"] not in repr(loaded)


def test_no_key_means_nothing_can_be_signed(tmp_path: Path) -> None:
    with pytest.raises(NoSigningKey):
        SigningKeys(tmp_path).signer()
    with pytest.raises(NoSigningKey, match="does-not-exist"):
        SigningKeys(tmp_path / "does-not-exist").signer()


def test_a_kid_is_derived_when_the_jwk_has_none() -> None:
    private, _ = generate_key("ES256", "x")
    del private["kid"]
    key = parse_signing_key(private)
    assert len(key.kid) == 43 and key.public_jwk["kid"] == key.kid
    with pytest.raises(ValueError, match="does not fit"):
        parse_signing_key({**generate_key("ES256", "y")[0], "alg": "EdDSA"})


def test_discovery_names_the_jwks() -> None:
    doc = discovery_document("https://authz.example/internal")
    assert doc["issuer"] == "https://authz.example/internal"
    assert doc["jwks_uri"] == "https://authz.example/internal/.well-known/jwks.json"
