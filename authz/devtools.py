"""Development helpers behind `authz keys generate` and `authz token mint`.

For local testing and demos only: keys are generated in memory and tokens are signed
with whatever header and claims the caller asks for, valid or not, so tests can build
the tokens the verifier must reject.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import (
    Algorithm,
    ECAlgorithm,
    OKPAlgorithm,
    RSAAlgorithm,
    get_default_algorithms,
)

_RSA_BITS = 2048
_EC_CURVES: dict[str, ec.EllipticCurve] = {
    "ES256": ec.SECP256R1(),
    "ES384": ec.SECP384R1(),
    "ES512": ec.SECP521R1(),
}
_HMAC_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
_RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
# Which JWK kty each signing algorithm needs, so a mismatched key fails with a clear error.
_KTY = {
    **dict.fromkeys(_RSA_ALGS, "RSA"),
    **dict.fromkeys(_EC_CURVES, "EC"),
    **dict.fromkeys(_HMAC_BYTES, "oct"),
    "EdDSA": "OKP",
}
SUPPORTED_ALGORITHMS = tuple(sorted(_KTY))
_ALGORITHMS: dict[str, Algorithm] = get_default_algorithms()


def generate_key(alg: str, kid: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Generate a signing key for `alg`; returns (private JWK, public JWK).

    RSA keys are 2048-bit, EdDSA uses Ed25519, HS keys are random secrets as long as
    the hash output. For HS the "public" JWK is the secret itself: whoever can verify
    can also sign, so it must be handled as a secret.
    """
    private: dict[str, Any]
    public: dict[str, Any]
    if alg in _RSA_ALGS:
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS)
        private = RSAAlgorithm.to_jwk(rsa_key, as_dict=True)
        public = RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)
    elif alg in _EC_CURVES:
        ec_key = ec.generate_private_key(_EC_CURVES[alg])
        private = ECAlgorithm.to_jwk(ec_key, as_dict=True)
        public = ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True)
    elif alg == "EdDSA":
        ed_key = ed25519.Ed25519PrivateKey.generate()
        private = OKPAlgorithm.to_jwk(ed_key, as_dict=True)
        public = OKPAlgorithm.to_jwk(ed_key.public_key(), as_dict=True)
    elif alg in _HMAC_BYTES:
        secret = _b64url(secrets.token_bytes(_HMAC_BYTES[alg]))
        private = {"kty": "oct", "k": secret}
        public = dict(private)
    else:
        raise ValueError(f"unsupported algorithm {alg!r}; use one of {SUPPORTED_ALGORITHMS}")
    for jwk in (private, public):
        jwk.update(kid=kid, alg=alg, use="sig")
    return private, public


def mint_token(
    private_jwk: dict[str, Any],
    claims: dict[str, Any],
    *,
    alg: str | None = None,
    typ: str | None = None,
    headers: dict[str, Any] | None = None,
) -> str:
    """Sign `claims` as a compact JWS with a private JWK (its `kid` goes in the header).

    `alg` defaults to the JWK's `alg`; `headers` are merged last, so they can override
    anything, including `alg`, to build deliberately inconsistent tokens.
    """
    alg = alg or private_jwk.get("alg")
    if alg not in _KTY:
        raise ValueError(f"unsupported or missing algorithm {alg!r}")
    if private_jwk.get("kty") != _KTY[alg]:
        raise ValueError(f"{alg} needs a {_KTY[alg]} key, not {private_jwk.get('kty')!r}")
    if _KTY[alg] != "oct" and "d" not in private_jwk:
        raise ValueError("a private JWK (with 'd') is needed to sign")
    algorithm = _ALGORITHMS[alg]
    key = algorithm.from_jwk(private_jwk)
    header: dict[str, Any] = {"alg": alg}
    if typ is not None:
        header["typ"] = typ
    if "kid" in private_jwk:
        header["kid"] = private_jwk["kid"]
    header.update(headers or {})
    signing_input = f"{_b64url_json(header)}.{_b64url_json(claims)}"
    signature = algorithm.sign(signing_input.encode("ascii"), key)
    return f"{signing_input}.{_b64url(signature)}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_json(value: dict[str, Any]) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode())


def write_key_files(out: Path, alg: str, kid: str) -> tuple[Path, Path]:
    """Generate a key and write it under `out`: (secret file, verifier's file).

    The private JWK (or, for HS*, the shared secret as a one-key JWKS) is created 0600 with
    O_EXCL and O_NOFOLLOW, so it is never readable by others for a moment, never written
    through a symlink and never overwrites a key. An asymmetric public key is merged into
    `jwks.json`, replaced atomically (a symlink there is replaced, not followed); an HS
    secret never goes into a file named as a public JWKS: the verifier reads the secret file.
    """
    private, public = generate_key(alg, kid)
    out.mkdir(parents=True, exist_ok=True)
    if public.get("kty") == "oct":
        secret_path = out / f"{kid}.secret.jwks.json"
        _create_secret(secret_path, {"keys": [private]})
        return secret_path, secret_path
    private_path = out / f"{kid}.private.jwk.json"
    _create_secret(private_path, private)
    jwks_path = out / "jwks.json"
    keys: list[dict[str, Any]] = []
    if jwks_path.is_file() and not jwks_path.is_symlink():
        keys = json.loads(jwks_path.read_text(encoding="utf-8")).get("keys", [])
    keys = [k for k in keys if k.get("kid") != kid] + [public]
    partial = out / f".{jwks_path.name}.{secrets.token_hex(4)}.partial"
    partial.write_text(json.dumps({"keys": keys}, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, jwks_path)
    return private_path, jwks_path


def _create_secret(path: Path, document: dict[str, Any]) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise FileExistsError(f"{path} exists: choose another --kid or remove it") from None
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(json.dumps(document, indent=2) + "\n")
