"""Key-bound tokens: a token's `cnf` claim (RFC 7800) says who may present it.

`cnf.jkt` binds it to a DPoP key (RFC 9449): it is accepted only with a proof by that key,
and refused as a plain bearer token (section 7.2), as is any token of an issuer that
requires DPoP. `cnf.x5t#S256` binds it to a client certificate (RFC 8705): it is accepted
only on a connection whose client certificate has that SHA-256 thumbprint, read from what
the proxy reports (Envoy's `include_peer_certificate`) or, if the policy trusts it, from the
`x-forwarded-client-cert` header an Istio gateway or sidecar sets. These checks depend on
the request, so they run on every request, cached token or not.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from authz.keys.thumbprint import b64url, certificate_thumbprint
from authz.policy.snapshot import CompiledPolicy
from authz.request.decision import Reason
from authz.request.jose import TokenError
from authz.request.verify import VerifiedToken
from authz.request.view import RequestView

DPOP = "dpop"
CERTIFICATE = "x5t#S256"
XFCC = "x-forwarded-client-cert"
MAX_XFCC = 16384  # a chain of a few PEM certificates; more is not an edge proxy's header


def confirmation(token: VerifiedToken) -> Mapping[str, Any] | None:
    cnf = token.claims.get("cnf")
    if cnf is None:
        return None
    if not isinstance(cnf, dict):
        raise TokenError(Reason.CLAIM_INVALID, "'cnf' is not an object")
    return cnf


def check_bearer(
    token: VerifiedToken, request: RequestView | None, policy: CompiledPolicy
) -> str | None:
    """A token presented without a proof. Returns the binding that held, if any."""
    cnf = confirmation(token)
    if cnf is not None and "jkt" in cnf:
        raise TokenError(
            Reason.DPOP_BOUND_AS_BEARER,
            "the token is DPoP-bound (cnf.jkt): send it as Authorization: DPoP with a proof",
        )
    if token.issuer.require_dpop:
        raise TokenError(Reason.DPOP_REQUIRED, f"{token.issuer.id} requires DPoP")
    return check_certificate(cnf, request, policy)


def check_dpop(
    token: VerifiedToken, proof_jkt: str, request: RequestView | None, policy: CompiledPolicy
) -> str:
    """A token presented with a proof by the key whose thumbprint is `proof_jkt`."""
    cnf = confirmation(token)
    jkt = cnf.get("jkt") if cnf is not None else None
    if jkt is None:
        raise TokenError(Reason.DPOP_KEY_MISMATCH, "the token is not DPoP-bound (no cnf.jkt)")
    if not isinstance(jkt, str) or not hmac.compare_digest(jkt.encode(), proof_jkt.encode()):
        raise TokenError(Reason.DPOP_KEY_MISMATCH, "the proof key is not the token's cnf.jkt")
    check_certificate(cnf, request, policy)
    return DPOP


def check_certificate(
    cnf: Mapping[str, Any] | None, request: RequestView | None, policy: CompiledPolicy
) -> str | None:
    """Refuse a certificate-bound token unless this connection presented that certificate."""
    if cnf is None or CERTIFICATE not in cnf:
        return None
    expected = cnf[CERTIFICATE]
    if not isinstance(expected, str):
        raise TokenError(Reason.CLAIM_INVALID, "'cnf.x5t#S256' is not a string")
    presented = client_certificate(request, policy) if request is not None else None
    if presented is None:
        raise TokenError(
            Reason.CERTIFICATE_MISSING,
            "the token is bound to a client certificate and none was presented",
        )
    if not hmac.compare_digest(expected.encode(), presented.encode()):
        raise TokenError(
            Reason.CERTIFICATE_MISMATCH, "the token is bound to another client certificate"
        )
    return CERTIFICATE


def client_certificate(request: RequestView, policy: CompiledPolicy) -> str | None:
    """x5t#S256 of the client certificate of this request, or None if it has none we trust."""
    pem = request.connection.peer_certificate
    if pem:
        try:
            return certificate_thumbprint(unquote(pem))
        except ValueError:
            return None
    if policy.client_certificate.trust_forwarded:
        header = request.headers.get(XFCC)
        if header:
            return forwarded_certificate(header)
    return None


def forwarded_certificate(header: str) -> str | None:
    """x5t#S256 of the first element of an `x-forwarded-client-cert` header (the client of
    the edge proxy): its `Hash` (hex SHA-256 of the DER) or else its `Cert` (URL-encoded PEM)."""
    if len(header) > MAX_XFCC:
        return None
    elements = _split(header, ",")
    if not elements:
        return None
    fields: dict[str, str] = {}
    for pair in _split(elements[0], ";"):
        key, sep, value = pair.partition("=")
        if sep:
            fields.setdefault(key.strip().lower(), _unquote(value.strip()))
    digest = fields.get("hash")
    if digest is not None:
        try:
            raw = bytes.fromhex(digest)
        except ValueError:
            return None
        return b64url(raw) if len(raw) == 32 else None
    cert = fields.get("cert")
    if cert is not None:
        try:
            return certificate_thumbprint(unquote(cert))
        except ValueError:
            return None
    return None


def _split(text: str, separator: str) -> list[str]:
    """Split on `separator` outside double quotes (XFCC quotes values holding , ; or =)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return [p for p in (p.strip() for p in parts) if p]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    return value
