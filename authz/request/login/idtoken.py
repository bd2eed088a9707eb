"""The checks an ID token must pass before it starts a session (OIDC Core 3.1.3.7): the
signature by the provider's published keys and the time window (as for any token, by
`authz.request.verify`), then `iss` is the provider, `aud` names this client (and `azp`,
when present, is this client), `sub` is there, `nonce` is the one this browser was sent
with, and `at_hash`, when present, matches the access token it came with.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from authz.policy.issuer import CompiledIssuer
from authz.request.decision import Reason
from authz.request.jose import TokenError, parse
from authz.request.verify import VerifiedToken, verify

# The hash behind `at_hash` is the one of the JWS algorithm (OIDC Core 3.1.3.6); EdDSA
# (Ed25519) uses SHA-512, as the OpenID Foundation's errata settled.
_HASHES = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}


def check_id_token(
    token: str,
    issuer: CompiledIssuer,
    *,
    client_id: str,
    nonce: str | None,
    access_token: str | None,
    now: float,
    may_wait: bool = True,
) -> VerifiedToken:
    """The verified ID token; raises TokenError(ID_TOKEN_INVALID) naming what failed."""
    try:
        verified = verify(token, {issuer.issuer: issuer}, now, may_wait=may_wait)
        alg = parse(token).header["alg"]
    except TokenError as exc:
        raise TokenError(Reason.ID_TOKEN_INVALID, f"{exc.reason}: {exc.detail}") from None
    claims = verified.claims
    problem = _problem(claims, alg, client_id, nonce, access_token)
    if problem is not None:
        raise TokenError(Reason.ID_TOKEN_INVALID, problem)
    return verified


def _problem(
    claims: dict[str, object] | object,
    alg: str,
    client_id: str,
    nonce: str | None,
    access_token: str | None,
) -> str | None:
    assert isinstance(claims, dict)
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if client_id not in audiences:
        return "aud does not name this client"
    azp = claims.get("azp")
    if azp is not None and azp != client_id:
        return "azp is another client"
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        return "sub missing"
    for name in ("exp", "iat"):
        if not isinstance(claims.get(name), int | float):
            return f"{name} missing"
    if nonce is not None:
        sent = claims.get("nonce")
        if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), nonce.encode()):
            return "nonce is not the one this sign-in was started with"
    at_hash = claims.get("at_hash")
    if at_hash is not None and access_token is not None:
        expected = token_hash(access_token, alg)
        if expected is None or not isinstance(at_hash, str):
            return "at_hash cannot be checked"
        if not hmac.compare_digest(at_hash.encode(), expected.encode()):
            return "at_hash does not match the access token"
    return None


def token_hash(value: str, alg: str) -> str | None:
    """The left half of the token's hash, base64url (`at_hash`, `c_hash`)."""
    digest = _HASHES.get("512" if alg == "EdDSA" else alg[-3:])
    if digest is None:
        return None
    full = digest(value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(full[: len(full) // 2]).rstrip(b"=").decode()
