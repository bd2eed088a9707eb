"""Keys, issuers and tokens for tests.

Keys are generated once per test process (RSA generation is slow) and cached by
(alg, kid); every RSA algorithm shares one key per kid. Typical use:

    issuer, private = make_issuer("ES256", require_typ="at+jwt")
    token = mint(private, claims(sub="bob"), typ="at+jwt")
    verified = verify(token, {issuer.issuer: issuer}, now=NOW)

For tokens no signer would produce, `compact()` assembles arbitrary parts.
"""

from __future__ import annotations

import base64
import functools
import json
from typing import Any

from authz.devtools import generate_key, mint_token
from authz.keys.jwk import RSA_ALGORITHMS, parse_jwks
from authz.keys.provider import StaticKeys
from authz.policy.issuer import CompiledIssuer

ISSUER = "https://issuer.test"
AUDIENCE = "api"
NOW = 1_700_000_000
TTL = 300
DROP = object()  # claims(exp=DROP) leaves the claim out


@functools.cache
def _generated(alg: str, kid: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return generate_key(alg, kid)


def signing_key(alg: str, kid: str = "k1") -> tuple[dict[str, Any], dict[str, Any]]:
    """(private JWK, public JWK) for alg and kid; the same key on every call in this process."""
    base = "RS256" if alg in RSA_ALGORITHMS else alg
    private, public = _generated(base, kid)
    return {**private, "alg": alg}, {**public, "alg": alg}


def make_issuer(
    alg: str = "RS256",
    *,
    kid: str = "k1",
    issuer: str = ISSUER,
    algorithms: frozenset[str] | None = None,
    extra_jwks: tuple[dict[str, Any], ...] = (),
    **overrides: Any,
) -> tuple[CompiledIssuer, dict[str, Any]]:
    """A CompiledIssuer trusting the (alg, kid) test key (plus `extra_jwks`), and its private JWK.

    `algorithms` defaults to {alg}; other CompiledIssuer fields come from `overrides`.
    """
    private, public = signing_key(alg, kid)
    allowed = algorithms if algorithms is not None else frozenset({alg})
    keys, _ = parse_jwks({"keys": [public, *extra_jwks]}, allowed)
    compiled = CompiledIssuer(
        id=f"JWTIssuer/test/{kid}",
        issuer=issuer,
        keys=StaticKeys(keys, "test"),
        algorithms=allowed,
        **overrides,
    )
    return compiled, private


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims at NOW for ISSUER/AUDIENCE; overrides replace them, DROP removes one."""
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": AUDIENCE,
        "iat": NOW,
        "exp": NOW + TTL,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not DROP}


def mint(private_jwk: dict[str, Any], payload: dict[str, Any] | None = None, **kwargs: Any) -> str:
    """Sign `payload` (default: claims()) with a private JWK; kwargs go to mint_token."""
    return mint_token(private_jwk, claims() if payload is None else payload, **kwargs)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment: str) -> bytes:
    """Lenient decoding, as a careless verifier would do it."""
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def compact(
    header: dict[str, Any] | bytes, payload: dict[str, Any] | bytes, signature: bytes
) -> str:
    """Assemble a compact JWS from parts; bytes are encoded as given (for invalid JSON etc.)."""

    def part(value: dict[str, Any] | bytes) -> str:
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        return b64url(raw)

    return f"{part(header)}.{part(payload)}.{b64url(signature)}"


def split(token: str) -> tuple[str, str, str]:
    header, payload, signature = token.split(".")
    return header, payload, signature
