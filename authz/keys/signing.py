"""authz's own signing keys: what it signs internal tokens with, and the JWKS that verifies them.

Keys are private JWKs (ES256 on P-256, or EdDSA on Ed25519), one per file in a directory:
a directory of files, or a Kubernetes Secret mounted as one. The key named by the file
`active` (its kid), or else the key whose kid sorts last, signs; every key is published, so
rotation overlaps: add the new key (published, and signing at once unless `active` still
names the old one), and remove the old key once no token it signed can still be valid.
The directory is read again when it changes (a mounted Secret is updated in place).
Private key material never leaves this module, and is never logged.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from authz.keys.thumbprint import jwk_thumbprint

log = structlog.get_logger("authz.keys")

ACTIVE_FILE = "active"
SIGNING_ALGORITHMS = ("ES256", "EdDSA")
MAX_KEY_FILE = 64 * 1024
_ECDSA = ec.ECDSA(hashes.SHA256())


class NoSigningKey(Exception):
    """No usable signing key is loaded: nothing can be minted."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_json(value: Mapping[str, Any]) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode())


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    private: Any = field(repr=False)
    public_jwk: Mapping[str, str] = field(repr=False)

    def sign(self, claims: Mapping[str, Any]) -> str:
        """A compact JWS of `claims`, typ JWT, with this key's kid."""
        header = {"alg": self.alg, "kid": self.kid, "typ": "JWT"}
        signing_input = f"{_b64url_json(header)}.{_b64url_json(claims)}".encode("ascii")
        if self.alg == "ES256":
            r, s = decode_dss_signature(self.private.sign(signing_input, _ECDSA))
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        else:
            signature = self.private.sign(signing_input)
        return f"{signing_input.decode('ascii')}.{_b64url(signature)}"


@dataclass(frozen=True)
class SigningKeySet:
    """Every loaded key (all published) and the one that signs."""

    active: SigningKey | None
    keys: tuple[SigningKey, ...] = ()
    problems: tuple[str, ...] = ()

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(k.public_jwk) for k in self.keys]}


def parse_signing_key(jwk: Mapping[str, Any]) -> SigningKey:
    """A private ES256 (P-256) or EdDSA (Ed25519) JWK; raises ValueError saying why not."""
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if "d" not in jwk:
        raise ValueError("not a private key (no 'd')")
    private: Any
    if kty == "EC" and crv == "P-256":
        alg, private = "ES256", ECAlgorithm.from_jwk(dict(jwk))
        if not isinstance(private, ec.EllipticCurvePrivateKey):
            raise ValueError("not an EC private key")
    elif kty == "OKP" and crv == "Ed25519":
        alg, private = "EdDSA", OKPAlgorithm.from_jwk(dict(jwk))
        if not isinstance(private, ed25519.Ed25519PrivateKey):
            raise ValueError("not an Ed25519 private key")
    else:
        raise ValueError(f"kty {kty!r} crv {crv!r}: use EC P-256 (ES256) or OKP Ed25519 (EdDSA)")
    if jwk.get("alg", alg) != alg:
        raise ValueError(f"alg {jwk.get('alg')!r} does not fit the key ({alg})")
    public = {k: jwk[k] for k in ("kty", "crv", "x", "y") if k in jwk}
    kid = jwk.get("kid")
    if kid is None:
        kid = jwk_thumbprint(public)
    if not isinstance(kid, str) or not kid:
        raise ValueError("'kid' is not a string")
    return SigningKey(kid, alg, private, {**public, "kid": kid, "alg": alg, "use": "sig"})


def load_directory(directory: Path) -> SigningKeySet:
    """Every key file of `directory` (hidden files skipped: a mounted Secret's `..data`)."""
    keys: dict[str, SigningKey] = {}
    problems: list[str] = []
    wanted: str | None = None
    try:
        entries = sorted(p for p in directory.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        return SigningKeySet(None, (), (f"{directory}: {exc.strerror or exc}",))
    for path in entries:
        try:
            if not path.is_file():
                continue
            text = path.read_bytes()[:MAX_KEY_FILE].decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{path.name}: unreadable ({type(exc).__name__})")
            continue
        if path.name == ACTIVE_FILE:
            wanted = text.strip()
            continue
        try:
            doc = json.loads(text)
            jwks = doc["keys"] if isinstance(doc, dict) and "keys" in doc else [doc]
            for jwk in jwks:
                if not isinstance(jwk, dict):
                    raise ValueError("not a JSON object")
                key = parse_signing_key(jwk)
                if key.kid in keys:
                    raise ValueError(f"kid {key.kid!r} is in another file too")
                keys[key.kid] = key
        except (ValueError, KeyError, TypeError) as exc:  # never echo the file: it is a secret
            problems.append(f"{path.name}: not a usable private JWK ({_reason(exc)})")
    ordered = tuple(keys[kid] for kid in sorted(keys))
    active = ordered[-1] if ordered else None
    if wanted is not None:
        active = keys.get(wanted)
        if active is None:
            problems.append(f"{ACTIVE_FILE}: names kid {wanted[:64]!r}, which is not loaded")
    return SigningKeySet(active, ordered, tuple(problems))


def _reason(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return "not JSON"
    if isinstance(exc, KeyError):
        return f"member {exc} missing"
    return str(exc)[:200]


class SigningKeys:
    """The directory's keys, reloaded by a daemon thread when its files change."""

    def __init__(self, directory: Path, *, poll_seconds: float = 5.0) -> None:
        self.directory = directory
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stamp = self._fingerprint()
        self._set = self._load()

    def current(self) -> SigningKeySet:
        return self._set

    def signer(self) -> SigningKey:
        active = self._set.active
        if active is None:
            raise NoSigningKey(
                "; ".join(self._set.problems) or f"no signing key in {self.directory}"
            )
        return active

    def reload(self) -> bool:
        """Read the directory again if it changed; True if it did."""
        stamp = self._fingerprint()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        self._set = self._load()
        return True

    def _load(self) -> SigningKeySet:
        loaded = load_directory(self.directory)
        log.info(
            "signing keys loaded",
            directory=str(self.directory),
            kids=[k.kid for k in loaded.keys],
            active=loaded.active.kid if loaded.active else None,
            problems=list(loaded.problems),
        )
        return loaded

    def _fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        try:
            stamps = []
            for path in self.directory.iterdir():
                if not path.name.startswith("."):
                    info = path.stat()  # follows the symlinks of a mounted Secret
                    stamps.append((path.name, info.st_mtime_ns, info.st_size))
            return tuple(sorted(stamps))
        except OSError:
            return ()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="signing-keys", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.reload()
            except Exception:  # never let the reloader die; the last keys keep serving
                log.exception("signing keys reload failed")

    def stop(self) -> None:
        self._stop.set()


def discovery_document(issuer: str) -> dict[str, Any]:
    """The OpenID discovery document of authz as the issuer of internal tokens: enough for
    ordinary libraries (and another authz with `discovery: true`) to find the JWKS."""
    base = issuer.rstrip("/")
    return {
        "issuer": issuer,
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "id_token_signing_alg_values_supported": list(SIGNING_ALGORITHMS),
        "token_endpoint_auth_signing_alg_values_supported": list(SIGNING_ALGORITHMS),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
    }
