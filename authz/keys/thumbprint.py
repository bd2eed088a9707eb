"""JWK thumbprints (RFC 7638) and X.509 certificate thumbprints (RFC 8705 `x5t#S256`).

A thumbprint names a key (or certificate) by a hash of its canonical form, which is how a
token is bound to the key a client proves possession of: `cnf.jkt` for DPoP (RFC 9449),
`cnf.x5t#S256` for a client certificate (RFC 8705).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from authz.keys.jwk import JWKSError

# RFC 7638 section 3.2: the required members of each key type, the only ones hashed.
REQUIRED_MEMBERS: dict[str, tuple[str, ...]] = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "OKP": ("crv", "kty", "x"),
}
# Members that only a private (or symmetric) key has: RFC 7518 section 6, RFC 8037.
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_members(jwk: Mapping[str, Any]) -> dict[str, str]:
    """The RFC 7638 required members of a public asymmetric JWK, in lexicographic order.

    Raises JWKSError for a key that is not a public RSA, EC or OKP key: symmetric keys and
    private key material are refused before anything else is read."""
    if PRIVATE_MEMBERS.intersection(jwk):
        raise JWKSError("the key carries private key material")
    kty = jwk.get("kty")
    required = REQUIRED_MEMBERS.get(kty) if isinstance(kty, str) else None
    if required is None:
        raise JWKSError(f"kty {str(kty)[:16]!r} is not an asymmetric key type (RSA, EC, OKP)")
    members: dict[str, str] = {}
    for name in required:
        value = jwk.get(name)
        if not isinstance(value, str) or not value:
            raise JWKSError(f"member {name!r} missing or not a string")
        members[name] = value
    return members


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """The base64url SHA-256 JWK thumbprint of a public key (RFC 7638 section 3)."""
    canonical = json.dumps(public_members(jwk), separators=(",", ":"), ensure_ascii=False)
    return b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


_PEM_BEGIN = "-----BEGIN CERTIFICATE-----"
_PEM_END = "-----END CERTIFICATE-----"


def certificate_thumbprint(pem: str) -> str:
    """`x5t#S256` of the first certificate in a PEM text: the base64url SHA-256 of its DER
    bytes (RFC 8705 section 3.1). The DER is read from the PEM as written, never re-encoded,
    so the hash is of exactly the certificate the client presented. Raises ValueError."""
    start = pem.find(_PEM_BEGIN)
    end = pem.find(_PEM_END, start + 1)
    if start < 0 or end < 0:
        raise ValueError("no PEM certificate")
    body = "".join(pem[start + len(_PEM_BEGIN) : end].split())
    try:
        der = base64.b64decode(body, validate=True)
    except binascii.Error:
        raise ValueError("the PEM certificate is not valid base64") from None
    if not der:
        raise ValueError("the PEM certificate is empty")
    return b64url(hashlib.sha256(der).digest())
