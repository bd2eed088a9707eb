"""Which credential kind a bearer token belongs to, when a policy introspects.

A policy with an introspecting issuer sends tokens that are not JWTs to that issuer's
endpoint, and JWTs to it too when the issuer introspects its JWTs; every other token is
a JWT for the bearer JWT kind. Both kinds ask here, so they never both claim one token.
"""

from __future__ import annotations

import base64
import binascii
import json

from authz.policy.issuer import CompiledIssuer
from authz.policy.snapshot import CompiledPolicy
from authz.request.jose import TokenError, parse

_MAX_HEADER_SEGMENT = 4096


def looks_like_jwt(token: str) -> bool:
    """Three dot-separated parts whose first decodes to a JSON object with `alg`: a JWS.
    Anything else (Hydra's `ory_at_x.y`, RFC 7662's `mF_9.B5f-4.1JqM`) is opaque."""
    if token.count(".") != 2:
        return False
    head = token[: token.index(".")]
    if not head or len(head) > _MAX_HEADER_SEGMENT:
        return False
    try:
        raw = base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))
        header = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):  # UnicodeDecodeError: a ValueError
        return False
    return isinstance(header, dict) and isinstance(header.get("alg"), str)


def introspecting_issuer(token: str, policy: CompiledPolicy) -> CompiledIssuer | None:
    """The issuer whose endpoint this policy asks about `token`, or None (a JWT verified
    with keys, or a policy that introspects nothing)."""
    route = policy.introspection
    if route is None:
        return None
    if not looks_like_jwt(token):
        return route.opaque
    if not route.by_iss:
        return None
    try:
        iss = parse(token).claims.get("iss")
    except TokenError:
        return None  # the JWT kind explains what is wrong with it
    return route.by_iss.get(iss) if isinstance(iss, str) else None
