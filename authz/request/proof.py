"""DPoP proofs (RFC 9449 section 4.3): a JWT that shows the caller holds a key, for one request.

A proof is checked cheapest first, signature last: the strict JWS parse of
`authz.request.jose`, `typ: dpop+jwt`, an asymmetric `alg` from the policy's list, a public
`jwk` (no private members), the claims' types, `htm` and `htu` against the request as the
proxy received it, `iat` within the policy's window, `ath` = the hash of the access token,
and then the signature with the `jwk`. Replay (`jti`) and nonces are left to the caller:
they hold state, a proof does not. Proofs are never cached; parsed proof keys are, by
their RFC 7638 thumbprint, which names exactly the members the key was built from.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from typing import Any

from authz.keys.jwk import JWKSError, VerifyingKey, parse_jwk, verify_signature
from authz.keys.thumbprint import b64url, jwk_thumbprint, public_members
from authz.policy.possession import DPOP_ALGORITHMS, DPoPSettings
from authz.request.decision import Reason
from authz.request.jose import Headers, TokenError, parse
from authz.request.paths import normalize_path
from authz.request.view import RequestView

DPOP_TYP = "dpop+jwt"
MAX_PROOF_BYTES = 8192  # an RSA-4096 key in the header is ~1.2 KB; the rest is small
MAX_JTI = 256  # RFC 9449 section 11.1: refuse needlessly large jti values
_SCHEMES = {"http": "80", "https": "443"}
_HEX = "0123456789abcdefABCDEF"


@dataclass(frozen=True, slots=True)
class Proof:
    """A proof that checked out: the key's thumbprint, and what replay and nonce checks need."""

    jkt: str
    jti: str
    iat: float
    nonce: str | None


def access_token_hash(token: str) -> str:
    """`ath`: base64url SHA-256 of the access token's ASCII (RFC 9449 section 4.2)."""
    return b64url(hashlib.sha256(token.encode("ascii")).digest())


class ProofKeys:
    """What a client's proofs share, parsed once: a client signs every proof with one key
    under one JOSE header, so the header is decoded once (`jose.Headers`), and the key is
    parsed (point validation, RSA checks) and thumbprinted once per header. Bounded."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self.headers = Headers(max_entries)
        self._keys: dict[str, VerifyingKey] = {}
        # id(header) -> (that header, its key's thumbprint, the key): a hit is the very
        # header object `headers` handed out, so the id cannot have been reused.
        self._by_header: dict[int, tuple[dict[str, Any], str, VerifyingKey]] = {}
        self._lock = threading.Lock()

    def key(self, jwk: dict[str, Any]) -> tuple[str, VerifyingKey]:
        """(thumbprint, key) for a proof's `jwk`; raises JWKSError for an unusable one."""
        members = public_members(jwk)
        jkt = jwk_thumbprint(members)
        found = self._keys.get(jkt)
        if found is None:
            found = parse_jwk(members, frozenset(DPOP_ALGORITHMS))
            with self._lock:
                if len(self._keys) >= self.max_entries:
                    self._keys.clear()
                self._keys[jkt] = found
        return jkt, found

    def of_header(self, header: dict[str, Any]) -> tuple[str, VerifyingKey]:
        """(thumbprint, key) of a decoded proof header's `jwk`, after the header's own
        checks (`typ`, a public `jwk`); raises TokenError."""
        entry = self._by_header.get(id(header))
        if entry is not None and entry[0] is header:
            return entry[1], entry[2]
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower().removeprefix("application/") != DPOP_TYP:
            raise TokenError(Reason.DPOP_PROOF_MALFORMED, f"proof typ must be {DPOP_TYP!r}")
        jwk = header.get("jwk")
        if not isinstance(jwk, dict):
            raise TokenError(Reason.DPOP_KEY_INVALID, "proof header has no 'jwk' object")
        try:
            jkt, key = self.key(jwk)
        except JWKSError as exc:
            raise TokenError(Reason.DPOP_KEY_INVALID, f"proof jwk: {exc}") from None
        with self._lock:
            if len(self._by_header) >= self.max_entries:
                self._by_header.clear()
            self._by_header[id(header)] = (header, jkt, key)
        return jkt, key


def verify_proof(
    proof: str,
    *,
    request: RequestView,
    ath: str,
    now: float,
    settings: DPoPSettings,
    keys: ProofKeys,
) -> Proof:
    """Check a DPoP proof for this request and the access token whose hash is `ath`
    (`access_token_hash`); raises TokenError with a dpop_* reason. Nothing of the proof
    is kept."""
    try:
        parsed = parse(proof, MAX_PROOF_BYTES, keys.headers)
    except TokenError as exc:
        raise TokenError(Reason.DPOP_PROOF_MALFORMED, f"proof: {exc.detail}") from None
    header, claims = parsed.header, parsed.claims
    alg: str = header["alg"]
    if alg not in settings.algorithms:
        raise TokenError(
            Reason.DPOP_ALGORITHM_NOT_ALLOWED, f"proof alg {alg[:32]!r} is not accepted"
        )
    jkt, key = keys.of_header(header)  # typ and jwk, checked once per header
    jti, htm, htu = claims.get("jti"), claims.get("htm"), claims.get("htu")
    if not (isinstance(jti, str) and isinstance(htm, str) and isinstance(htu, str)):
        jti, htm, htu = _string(claims, "jti"), _string(claims, "htm"), _string(claims, "htu")
    if not jti or len(jti) > MAX_JTI:
        raise TokenError(Reason.DPOP_PROOF_MALFORMED, f"proof jti empty or over {MAX_JTI}")
    if htm != request.method:
        raise TokenError(Reason.DPOP_METHOD_MISMATCH, "proof htm is not the request method")
    _check_uri(htu, request)
    iat = _number(claims, "iat")
    if iat > now + settings.skew:
        raise TokenError(Reason.DPOP_PROOF_EXPIRED, "proof iat is in the future")
    if iat < now - settings.max_age:
        raise TokenError(
            Reason.DPOP_PROOF_EXPIRED, f"proof is older than {settings.max_age}s (iat)"
        )
    if _string(claims, "ath") != ath:
        raise TokenError(Reason.DPOP_TOKEN_HASH_MISMATCH, "proof ath is not the token's hash")
    nonce = claims.get("nonce")
    if nonce is not None and not isinstance(nonce, str):
        raise TokenError(Reason.DPOP_PROOF_MALFORMED, "proof nonce is not a string")
    if not verify_signature(key, alg, parsed.signing_input, parsed.signature):
        raise TokenError(Reason.DPOP_SIGNATURE_INVALID, "proof signature does not verify")
    return Proof(jkt, jti, iat, nonce)


def _string(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise TokenError(Reason.DPOP_PROOF_MALFORMED, f"proof {name!r} missing or not a string")
    return value


def _number(claims: dict[str, Any], name: str) -> float:
    value = claims.get(name)
    if type(value) is bool or not isinstance(value, int | float):
        raise TokenError(Reason.DPOP_PROOF_MALFORMED, f"proof {name!r} missing or not a number")
    try:
        return float(value)
    except OverflowError:
        raise TokenError(Reason.DPOP_PROOF_MALFORMED, f"proof {name!r} is out of range") from None


# -- htu ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """An http(s) URI normalised for comparison (RFC 3986 sections 6.2.2 and 6.2.3, as RFC
    9449 section 4.3 asks): lower-case scheme and host, no default port, no trailing dot,
    the path as Envoy normalises it with upper-case escapes, no query or fragment."""

    scheme: str
    host: str
    port: str | None  # "" for the scheme's default; None: the proxy reported no port
    path: str


def _upper_escapes(path: str) -> str:
    if "%" not in path:
        return path
    parts = path.split("%")
    out = [parts[0]]
    for part in parts[1:]:
        escaped = len(part) >= 2 and part[0] in _HEX and part[1] in _HEX
        out.append(part[:2].upper() + part[2:] if escaped else part)
    return "%".join(out)


def _authority(authority: str, scheme: str) -> tuple[str, str | None] | None:
    """(host, port) of an authority: port "" for the default, None when none is written;
    None if it has user info or a bad port."""
    if "@" in authority or not authority:
        return None
    bracket = authority.rfind("]")
    colon = authority.rfind(":")
    if colon <= bracket:
        host, port = authority, None
    else:
        host, written = authority[:colon], authority[colon + 1 :]
        if written and not (written.isascii() and written.isdigit()):
            return None
        number = (written.lstrip("0") or "0") if written else ""
        port = "" if number in ("", _SCHEMES[scheme]) else number
    host = host.lower().removesuffix(".")
    if not host:
        return None
    return host, port


_TARGETS: dict[str, Target | None] = {}
_UNSEEN = object()
_MAX_TARGETS = 4096


def parse_target(uri: str) -> Target | None:
    """An absolute http(s) URI as a Target, or None if it is not one. Clients call a few
    URIs many times: parsed ones are kept (bounded)."""
    target = _TARGETS.get(uri, _UNSEEN)
    if target is not _UNSEEN:
        return target  # type: ignore[return-value]
    target = _parse_target(uri)
    if len(_TARGETS) >= _MAX_TARGETS:
        _TARGETS.clear()
    _TARGETS[uri] = target
    return target


_NOT_IN_URI = re.compile(r"[\x00-\x20\x7f]")


def _parse_target(uri: str) -> Target | None:
    if not uri.isascii() or _NOT_IN_URI.search(uri):
        return None
    scheme, sep, rest = uri.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _SCHEMES:
        return None
    end = len(rest)
    for mark in "?#":
        at = rest.find(mark)
        if at >= 0:
            end = min(end, at)
    rest = rest[:end]
    slash = rest.find("/")
    authority, path = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
    host_port = _authority(authority, scheme)
    if host_port is None:
        return None
    host, port = host_port
    return Target(scheme, host, port or "", _upper_escapes(normalize_path(path)))


def request_target(request: RequestView) -> Target | None:
    """The request as the proxy received it: the scheme it reports, the Host it routes on,
    and the path it forwards. None when the proxy did not report the scheme."""
    scheme = request.connection.scheme.lower()
    if scheme not in _SCHEMES:
        return None
    host_port = _authority(request.host, scheme)
    if host_port is None:
        return None
    return Target(scheme, host_port[0], host_port[1], _upper_escapes(request.path))


def _check_uri(htu: str, request: RequestView) -> None:
    """`htu` must name this request. A port is compared only when the Host the proxy
    reports carries one: the shipped proxy configurations strip it (strip_any_host_port)
    before authz sees the request, so its absence says nothing about the client's URI."""
    target = request_target(request)
    if target is None:
        raise TokenError(
            Reason.DPOP_URI_MISMATCH, "the proxy did not report the request's scheme (http/https)"
        )
    claimed = parse_target(htu)
    if claimed is None:
        raise TokenError(Reason.DPOP_URI_MISMATCH, "proof htu is not an absolute http(s) URI")
    same = (
        claimed.scheme == target.scheme
        and claimed.host == target.host
        and claimed.path == target.path
        and (target.port is None or claimed.port == target.port)
    )
    if not same:
        raise TokenError(Reason.DPOP_URI_MISMATCH, "proof htu is not the request URI")
