"""Keys, issuers and tokens, generated fresh at the start of every run.

Representative tokens come from `authz.devtools.mint_token`, the same helper behind
`authz token mint`. Cache-miss scenarios need tens of thousands of *unique* tokens, and
`mint_token` re-imports the private JWK on every call (~1-50 ms for RSA, since
cryptography validates the key), so `mint_many` loads each key once per worker process
and signs with the same PyJWT algorithm objects, producing the same token format.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from jwt.algorithms import Algorithm, get_default_algorithms

from authz.devtools import generate_key, mint_token

AUDIENCE = "shop-api"
#: Algorithms of the realistic policy's five issuers: a mix, as a real gateway sees.
REALISTIC_ALGS = ("RS256", "ES256", "EdDSA", "RS256", "ES256")
#: Scale variants add issuers with fast-to-generate keys (RSA keygen is ~0.1-0.2 s each).
EXTRA_ALGS = ("ES256", "EdDSA")
SCOPES = "openid profile orders.read orders.write users.read catalog.read"


@dataclass(frozen=True)
class Issuer:
    """One signing identity: its `iss`, JWK pair and the name its JWTIssuer object has."""

    name: str
    iss: str
    alg: str
    private_jwk: dict[str, Any] = field(repr=False)
    public_jwk: dict[str, Any] = field(repr=False)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk]}


def make_issuers(count: int, start: int = 0) -> list[Issuer]:
    """Issuers `idp-<start>..`: the first five use REALISTIC_ALGS, the rest EC/EdDSA."""
    issuers = []
    for i in range(start, start + count):
        alg = REALISTIC_ALGS[i] if i < len(REALISTIC_ALGS) else EXTRA_ALGS[i % 2]
        private, public = generate_key(alg, f"idp-{i}-key-1")
        issuers.append(Issuer(f"idp-{i}", f"https://idp-{i}.bench.local", alg, private, public))
    return issuers


def claims(issuer: Issuer, *, ttl: int = 3600, scope: str = SCOPES, **extra: Any) -> dict[str, Any]:
    """Claims of a typical access token (~700-900 bytes once signed)."""
    now = int(time.time())
    out: dict[str, Any] = {
        "iss": issuer.iss,
        "sub": "user-4711",
        "aud": AUDIENCE,
        "iat": now if ttl > 0 else now + ttl - 60,
        "exp": now + ttl,
        "jti": "bench-0",
        "azp": "shop-frontend",
        "scope": scope,
        "realm_access": {"roles": ["customer", "beta"]},
        "tenant": "acme",
    }
    out.update(extra)
    return out


def mint(issuer: Issuer, **claim_args: Any) -> str:
    return mint_token(issuer.private_jwk, claims(issuer, **claim_args))


def bad_signature(token: str) -> str:
    """The same token with one signature byte changed (still canonical base64url)."""
    head, _, sig = token.rpartition(".")
    i = len(sig) // 2
    swapped = "A" if sig[i] != "A" else "B"
    return f"{head}.{sig[:i]}{swapped}{sig[i + 1 :]}"


# -- bulk minting (worker processes) ------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@cache
def _signer(jwk_json: str) -> tuple[Algorithm, Any, str]:
    jwk = json.loads(jwk_json)
    algorithm = get_default_algorithms()[jwk["alg"]]
    header = {"alg": jwk["alg"], "kid": jwk["kid"]}  # what mint_token writes
    return (
        algorithm,
        algorithm.from_jwk(jwk),
        _b64(json.dumps(header, separators=(",", ":")).encode()),
    )


def _mint_chunk(
    jwk_json: str, base: dict[str, Any], prefix: str, start: int, stop: int
) -> list[str]:
    algorithm, key, header = _signer(jwk_json)
    out = []
    for n in range(start, stop):
        body = _b64(json.dumps(_varied(base, prefix, n), separators=(",", ":")).encode())
        signing_input = f"{header}.{body}"
        out.append(f"{signing_input}.{_b64(algorithm.sign(signing_input.encode(), key))}")
    return out


def _varied(base: dict[str, Any], prefix: str, n: int) -> dict[str, Any]:
    """Token `n` of a bulk mint: what differs between real access tokens of one issuer
    differs here too (a user, a session, when it was issued), not only the `jti`, so the
    token cache holds what it would hold for as many real users."""
    issued = base["iat"] - n % 300  # within the last five minutes; each valid for an hour
    return {
        **base,
        "sub": f"user-{n:06d}",
        "iat": issued,
        "exp": issued + base["exp"] - base["iat"],
        "jti": f"{prefix}-{n}-{uuid.uuid4()}",
        "sid": str(uuid.uuid4()),
    }


def _chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, size):
        yield start, min(total, start + size)


def mint_many(issuer: Issuer, count: int, prefix: str, workers: int = 2) -> list[str]:
    """`count` valid tokens of `issuer`, each for another user and session (`_varied`), so
    each is a cache miss."""
    if count <= 0:
        return []
    jwk_json = json.dumps(issuer.private_jwk)
    base = claims(issuer)
    chunk = max(250, count // (workers * 4))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        parts = [
            pool.submit(_mint_chunk, jwk_json, base, prefix, a, b) for a, b in _chunks(count, chunk)
        ]
        return [token for part in parts for token in part.result()]
