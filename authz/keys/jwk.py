"""Verifying keys: JWKS/PEM/X.509 parsing and JWS signature verification.

A key's usable algorithms are derived from its type and curve, then narrowed by
the JWK's own `alg` and by the issuer's allowlist, so a key can only ever verify
the algorithms it was meant for: an RSA or EC public key is never an HMAC secret,
and HS verification happens only with an explicit `kty: oct` key.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import load_pem_public_key

RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
# JWK `crv` -> (curve, the one JWS algorithm that uses it).
_EC_CURVES: dict[str, tuple[ec.EllipticCurve, str]] = {
    "P-256": (ec.SECP256R1(), "ES256"),
    "P-384": (ec.SECP384R1(), "ES384"),
    "P-521": (ec.SECP521R1(), "ES512"),
}
_EC_BY_CURVE_NAME = {curve.name: alg for curve, alg in _EC_CURVES.values()}
# RFC 7518 section 3.2: an HMAC key must be at least as long as the hash output.
_HMAC_MIN_KEY_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
# NIST SP 800-131A: shorter RSA moduli are not acceptable for signatures.
MIN_RSA_BITS = 2048

_B64URL_MEMBER = re.compile(r"[A-Za-z0-9_-]+={0,2}")


# Real issuers use e = 65537. A huge exponent costs every verification time proportional
# to its bit length (junk tokens for a key with e ~ 2^4096 cost ~100x the CPU); Go's
# crypto/rsa refuses exponents past 2^31-1 too.
MAX_RSA_EXPONENT = 2**31 - 1


class JWKSError(ValueError):
    """A key document or key that cannot be used; the message says which and why."""


class NoUsableKeys(JWKSError):
    """A well-formed key document that leaves no usable key (`{"keys": []}`, only keys authz
    refuses, a mixed set). Unlike a malformed one it is an answer: the issuer publishes no
    key we accept, so its tokens must be denied now, not after `maxStaleSeconds`. Removing a
    key is how an operator revokes a leaked one."""


@dataclass(frozen=True, slots=True)
class VerifyingKey:
    """A public key (or HMAC secret) ready for verification, with the algorithms it may verify.

    `key` is excluded from hashing because cryptography's key objects are unhashable;
    it still takes part in equality, so two key sets compare equal only if the material matches.
    """

    kid: str | None
    kty: str
    algorithms: frozenset[str]
    key: Any = field(hash=False, repr=False)


@dataclass(frozen=True, slots=True)
class KeySet:
    """An issuer's verifying keys, indexed by (kid, alg) so lookups on the request path are O(1)."""

    keys: tuple[VerifyingKey, ...] = ()
    _index: dict[tuple[str | None, str], tuple[VerifyingKey, ...]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        index: dict[tuple[str | None, str], list[VerifyingKey]] = {}
        for key in self.keys:
            for alg in key.algorithms:
                # (None, alg) serves tokens without a kid: every key for that alg is a candidate.
                index.setdefault((None, alg), []).append(key)
                if key.kid is not None:
                    index.setdefault((key.kid, alg), []).append(key)
        object.__setattr__(self, "_index", {k: tuple(v) for k, v in index.items()})

    @classmethod
    def empty(cls) -> KeySet:
        """The key set of an issuer whose keys are not (yet) available."""
        return cls()

    @property
    def kids(self) -> tuple[str, ...]:
        """Distinct key ids, in document order (for logs and status)."""
        return tuple(dict.fromkeys(k.kid for k in self.keys if k.kid is not None))

    def candidates(self, kid: str | None, alg: str) -> tuple[VerifyingKey, ...]:
        """Keys that may verify a token with this kid and alg.

        A token naming a kid gets only keys with that kid: an unknown kid never falls
        back to other keys, so a token cannot be checked against a key it did not name.
        """
        return self._index.get((kid, alg), ())


def parse_jwks(doc: object, allowed: frozenset[str]) -> tuple[KeySet, list[str]]:
    """Parse a JWK Set into a KeySet, skipping unusable keys with a warning for each.

    Raises JWKSError if the document is malformed, and NoUsableKeys if it is well formed
    but no usable key remains, so an issuer never silently ends up with no keys.
    """
    if not isinstance(doc, dict):
        raise JWKSError("JWKS must be a JSON object")
    entries = doc.get("keys")
    if not isinstance(entries, list):
        raise JWKSError("JWKS must have a 'keys' array")
    keys: list[VerifyingKey] = []
    warnings: list[str] = []
    for i, jwk in enumerate(entries):
        kid = jwk.get("kid") if isinstance(jwk, dict) else None
        where = f"keys[{i}] (kid {kid!r})" if isinstance(kid, str) else f"keys[{i}]"
        try:
            keys.append(parse_jwk(jwk, allowed))
        except JWKSError as e:
            warnings.append(f"{where}: {e}")
    return build_key_set(keys, warnings, "JWKS", "the 'keys' array is empty"), warnings


def build_key_set(keys: list[VerifyingKey], warnings: list[str], what: str, empty: str) -> KeySet:
    """The checks every key document gets (JWKS, PEM list, X.509 map), then the KeySet.

    Appends to `warnings`; raises NoUsableKeys naming `what` if no usable key remains.
    """
    if any(k.kty == "oct" for k in keys) and any(k.kty != "oct" for k in keys):
        # Wycheproof jws_mixedSymmetryKeyset: one set holding secrets and public keys
        # invites algorithm confusion; an issuer uses one kind or the other.
        raise NoUsableKeys(f"{what} mixes symmetric (oct) and asymmetric keys")
    ambiguous = _ambiguous_kids(keys)
    for kid in sorted(ambiguous):
        # Wycheproof jws_duplicate_kid: which key a token names is ambiguous
        warnings.append(f"kid {kid!r} names different keys for one algorithm; none is used")
    keys = [k for k in keys if k.kid not in ambiguous]
    if not keys:
        detail = "; ".join(warnings) if warnings else empty
        raise NoUsableKeys(f"{what} has no usable key: {detail}")
    return KeySet(tuple(keys))


def _ambiguous_kids(keys: list[VerifyingKey]) -> set[str]:
    """Kids shared by different keys that verify a common algorithm (identical copies are fine)."""
    seen: dict[tuple[str, str], VerifyingKey] = {}
    ambiguous: set[str] = set()
    for key in keys:
        if key.kid is None:
            continue
        for alg in key.algorithms:
            other = seen.setdefault((key.kid, alg), key)
            if other is not key and other != key:
                ambiguous.add(key.kid)
    return ambiguous


def parse_jwk(jwk: object, allowed: frozenset[str]) -> VerifyingKey:
    """Parse one public JWK (RFC 7517/7518/8037); raises JWKSError saying why it is unusable."""
    if not isinstance(jwk, dict):
        raise JWKSError("not a JSON object")
    # Checked first: a leaked private key is the problem to report, whatever else is wrong.
    if "d" in jwk:
        raise JWKSError("private key material in JWKS")
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise JWKSError("'kid' is not a string")
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise JWKSError(f"'use' is {use!r}, not 'sig'")
    key_ops = jwk.get("key_ops")
    if key_ops is not None:
        if not isinstance(key_ops, list) or not all(isinstance(op, str) for op in key_ops):
            raise JWKSError("'key_ops' is not an array of strings")
        if "verify" not in key_ops:
            raise JWKSError("'key_ops' does not include 'verify'")
    alg = jwk.get("alg")
    if alg is not None and not isinstance(alg, str):
        raise JWKSError("'alg' is not a string")
    kty = jwk.get("kty")
    if kty == "oct":
        return _oct_key(jwk, kid, alg, allowed)
    if kty not in ("RSA", "EC", "OKP"):
        raise JWKSError(f"unsupported kty {kty!r}")
    public: Any
    if kty == "RSA":
        public = _rsa_from_jwk(jwk)
    elif kty == "EC":
        public = _ec_from_jwk(jwk)
    else:
        public = _okp_from_jwk(jwk)
    return _verifying_key(public, kid, alg, allowed)


def parse_pem_public_key(
    pem: bytes | str, kid: str | None, allowed: frozenset[str]
) -> VerifyingKey:
    """Parse a PEM SubjectPublicKeyInfo (RSA, EC or Ed25519/Ed448) into a VerifyingKey."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        public = load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise JWKSError(f"not a PEM public key: {e}") from None
    return _verifying_key(public, kid, None, allowed)


def parse_x509_cert(pem: bytes | str, kid: str | None, allowed: frozenset[str]) -> VerifyingKey:
    """Take the public key of a PEM X.509 certificate; the certificate itself is not validated."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        public = x509.load_pem_x509_certificate(data).public_key()
    except (ValueError, UnsupportedAlgorithm) as e:
        raise JWKSError(f"not a PEM X.509 certificate: {e}") from None
    return _verifying_key(public, kid, None, allowed)


def _verifying_key(
    public: object, kid: str | None, jwk_alg: str | None, allowed: frozenset[str]
) -> VerifyingKey:
    """Derive the key's algorithms from its type, then narrow them by JWK alg and allowlist."""
    kty: str
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < MIN_RSA_BITS:
            raise JWKSError(f"RSA key is {public.key_size} bits, below {MIN_RSA_BITS}")
        exponent = public.public_numbers().e
        if not 3 <= exponent <= MAX_RSA_EXPONENT or exponent % 2 == 0:
            raise JWKSError(
                f"RSA public exponent {str(exponent)[:20]} is outside what issuers use "
                f"(odd, 3 to 2^31-1; nearly always 65537)"
            )
        kty, derived = "RSA", RSA_ALGORITHMS
    elif isinstance(public, ec.EllipticCurvePublicKey):
        ec_alg = _EC_BY_CURVE_NAME.get(public.curve.name)
        if ec_alg is None:
            raise JWKSError(f"unsupported EC curve {public.curve.name}")
        kty, derived = "EC", frozenset({ec_alg})
    elif isinstance(public, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        kty, derived = "OKP", frozenset({"EdDSA"})
    else:
        raise JWKSError(f"unsupported key type {type(public).__name__}")
    return VerifyingKey(kid, kty, _narrow(derived, jwk_alg, allowed), public)


def _narrow(
    derived: frozenset[str], jwk_alg: str | None, allowed: frozenset[str]
) -> frozenset[str]:
    algorithms = derived & allowed
    if jwk_alg is not None:
        algorithms &= {jwk_alg}
    if not algorithms:
        hint = f"alg {jwk_alg!r}, " if jwk_alg is not None else ""
        raise JWKSError(
            f"no allowed algorithm (key supports {sorted(derived)}, {hint}"
            f"issuer allows {sorted(allowed)})"
        )
    return algorithms


def _member(jwk: dict[str, Any], name: str) -> bytes:
    """Decode a base64url JWK member; trailing padding is tolerated, other alphabets are not."""
    value = jwk.get(name)
    if not isinstance(value, str) or not _B64URL_MEMBER.fullmatch(value):
        raise JWKSError(f"member {name!r} missing or not base64url")
    stripped = value.rstrip("=")
    try:
        return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except binascii.Error:
        raise JWKSError(f"member {name!r} is not valid base64url") from None


def _coordinate_size(curve: ec.EllipticCurve) -> int:
    return (curve.key_size + 7) // 8


def _rsa_from_jwk(jwk: dict[str, Any]) -> rsa.RSAPublicKey:
    n = int.from_bytes(_member(jwk, "n"), "big")
    e = int.from_bytes(_member(jwk, "e"), "big")
    if _roca_fingerprint(n):
        raise JWKSError("RSA key has the ROCA fingerprint (CVE-2017-15361): it can be factored")
    try:
        return rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError as err:
        raise JWKSError(f"invalid RSA key: {err}") from None


# ROCA (Nemec et al., CCS 2017): moduli made by the vulnerable Infineon library satisfy
# n mod p in <65537> (mod p) for every one of these small primes; random moduli almost never do.
_ROCA_PRIMES = (
    3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89,
    97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
)  # fmt: skip


def _subgroup(p: int) -> frozenset[int]:
    members, value = set(), 1
    while value not in members:
        members.add(value)
        value = value * 65537 % p
    return frozenset(members)


_ROCA_SUBGROUPS = tuple((p, _subgroup(p)) for p in _ROCA_PRIMES)


def _roca_fingerprint(n: int) -> bool:
    return all(n % p in group for p, group in _ROCA_SUBGROUPS)


def _ec_from_jwk(jwk: dict[str, Any]) -> ec.EllipticCurvePublicKey:
    crv = jwk.get("crv")
    if not isinstance(crv, str) or crv not in _EC_CURVES:
        raise JWKSError(f"unsupported EC crv {crv!r}")
    curve = _EC_CURVES[crv][0]
    size = _coordinate_size(curve)
    x, y = _member(jwk, "x"), _member(jwk, "y")
    # RFC 7518 section 6.2.1.2: coordinates are always full size.
    if len(x) != size or len(y) != size:
        raise JWKSError(f"EC coordinates must be {size} bytes for {crv}")
    numbers = ec.EllipticCurvePublicNumbers(
        int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve
    )
    try:
        return numbers.public_key()
    except ValueError as err:
        raise JWKSError(f"invalid EC key: {err}") from None


def _okp_from_jwk(jwk: dict[str, Any]) -> ed25519.Ed25519PublicKey | ed448.Ed448PublicKey:
    crv = jwk.get("crv")
    loader: Callable[[bytes], ed25519.Ed25519PublicKey | ed448.Ed448PublicKey]
    if crv == "Ed25519":
        loader = ed25519.Ed25519PublicKey.from_public_bytes
    elif crv == "Ed448":
        loader = ed448.Ed448PublicKey.from_public_bytes
    else:
        raise JWKSError(f"unsupported OKP crv {crv!r}")
    try:
        return loader(_member(jwk, "x"))
    except ValueError as err:
        raise JWKSError(f"invalid {crv} key: {err}") from None


def _oct_key(
    jwk: dict[str, Any], kid: str | None, jwk_alg: str | None, allowed: frozenset[str]
) -> VerifyingKey:
    """An HMAC secret; only algorithms whose hash is no longer than the secret are offered."""
    secret = _member(jwk, "k")
    derived = frozenset(a for a, n in _HMAC_MIN_KEY_BYTES.items() if len(secret) >= n)
    if not derived:
        raise JWKSError(f"oct key is {len(secret)} bytes, below the 32 HS256 needs")
    return VerifyingKey(kid, "oct", _narrow(derived, jwk_alg, allowed), secret)


_Verifier = Callable[[Any, bytes, bytes], bool]


def _rsa_verifier(pad: padding.AsymmetricPadding, digest: hashes.HashAlgorithm) -> _Verifier:
    def verify(key: rsa.RSAPublicKey, msg: bytes, sig: bytes) -> bool:
        try:
            key.verify(sig, msg, pad, digest)
        except InvalidSignature:
            return False
        return True

    return verify


def _pss(digest: hashes.HashAlgorithm) -> padding.PSS:
    # RFC 7518 section 3.5: the salt is as long as the hash output.
    return padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)


def _ec_verifier(digest: hashes.HashAlgorithm, curve: ec.EllipticCurve) -> _Verifier:
    ecdsa = ec.ECDSA(digest)
    size = _coordinate_size(curve)

    def verify(key: ec.EllipticCurvePublicKey, msg: bytes, sig: bytes) -> bool:
        # JWS carries raw r||s of exactly twice the coordinate size (RFC 7518 section 3.4);
        # anything else, DER included, is not a JWS ECDSA signature.
        if len(sig) != 2 * size:
            return False
        r = int.from_bytes(sig[:size], "big")
        s = int.from_bytes(sig[size:], "big")
        try:
            key.verify(encode_dss_signature(r, s), msg, ecdsa)
        except InvalidSignature:
            return False
        return True

    return verify


def _eddsa_verify(
    key: ed25519.Ed25519PublicKey | ed448.Ed448PublicKey, msg: bytes, sig: bytes
) -> bool:
    try:
        key.verify(sig, msg)
    except InvalidSignature:
        return False
    return True


def _hmac_verifier(digest: str) -> _Verifier:
    def verify(key: bytes, msg: bytes, sig: bytes) -> bool:
        return hmac.compare_digest(hmac.digest(key, msg, digest), sig)

    return verify


_SHA256, _SHA384, _SHA512 = hashes.SHA256(), hashes.SHA384(), hashes.SHA512()
_PKCS1 = padding.PKCS1v15()
# Built once: padding, hash and ECDSA objects are reused by every verification.
_VERIFIERS: dict[str, _Verifier] = {
    "RS256": _rsa_verifier(_PKCS1, _SHA256),
    "RS384": _rsa_verifier(_PKCS1, _SHA384),
    "RS512": _rsa_verifier(_PKCS1, _SHA512),
    "PS256": _rsa_verifier(_pss(_SHA256), _SHA256),
    "PS384": _rsa_verifier(_pss(_SHA384), _SHA384),
    "PS512": _rsa_verifier(_pss(_SHA512), _SHA512),
    "ES256": _ec_verifier(_SHA256, _EC_CURVES["P-256"][0]),
    "ES384": _ec_verifier(_SHA384, _EC_CURVES["P-384"][0]),
    "ES512": _ec_verifier(_SHA512, _EC_CURVES["P-521"][0]),
    "EdDSA": _eddsa_verify,
    "HS256": _hmac_verifier("sha256"),
    "HS384": _hmac_verifier("sha384"),
    "HS512": _hmac_verifier("sha512"),
}


def verify_signature(key: VerifyingKey, alg: str, signing_input: bytes, signature: bytes) -> bool:
    """True only if `signature` is a valid `alg` signature by `key`; never raises for bad input.

    The alg must be one the key was parsed for, which also pins EC curves to their
    algorithm and keeps asymmetric keys out of HMAC.
    """
    if alg not in key.algorithms:
        return False
    return _VERIFIERS[alg](key.key, signing_input, signature)
