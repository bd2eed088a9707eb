"""Sealed values: AES-256-GCM under a key ring, so a cookie can be neither read nor forged.

A ring lists 32-byte keys, newest first: values are sealed with the first and opened with
any, so adding a key (rotation) logs nobody out, and removing one ends the sessions sealed
with it. Each sealed value names its key by a 4-byte id and binds a `purpose` as associated
data: a pre-login cookie cannot be replayed as a session, nor one cookie name as another.

    ring = KeyRing.parse(text)              # base64 keys, one a line, '#' comments
    sealed = ring.seal(b"{...}", b"session")
    opened = ring.open(sealed, b"session")  # None: forged, damaged or an unknown key
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
_VERSION = b"\x01"
_KID_BYTES = 4
_NONCE_BYTES = 12
_TAG_BYTES = 16
_HEAD = len(_VERSION) + _KID_BYTES + _NONCE_BYTES
MAX_KEYS = 16


class KeyRingError(ValueError):
    """Key ring text that holds no usable key, or a key of the wrong size."""


def _kid(key: bytes) -> bytes:
    return hashlib.sha256(b"authz-seal-kid\0" + key).digest()[:_KID_BYTES]


def _b64decode(text: str) -> bytes:
    """Standard or URL-safe base64, padding optional (what `openssl rand -base64 32` and
    most secret generators print)."""
    cleaned = text.strip().replace("-", "+").replace("_", "/")
    return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class Opened:
    """An opened value; `stale` when sealed with an older key (re-seal it when convenient)."""

    plaintext: bytes
    stale: bool


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The keys, newest first. Never printed: `repr` shows only their ids."""

    keys: tuple[bytes, ...] = field(repr=False)
    kids: tuple[str, ...] = ()
    _ciphers: tuple[tuple[bytes, AESGCM], ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def of(cls, keys: list[bytes]) -> KeyRing:
        if not keys:
            raise KeyRingError("no key")
        if len(keys) > MAX_KEYS:
            raise KeyRingError(f"{len(keys)} keys, at most {MAX_KEYS}")
        for i, key in enumerate(keys):
            if len(key) != KEY_BYTES:
                raise KeyRingError(f"key {i + 1} is {len(key)} bytes; AES-256 needs {KEY_BYTES}")
        ciphers = tuple((_kid(k), AESGCM(k)) for k in keys)
        return cls(tuple(keys), tuple(kid.hex() for kid, _ in ciphers), ciphers)

    @classmethod
    def parse(cls, text: str | bytes) -> KeyRing:
        """One base64 key a line, newest first; blank lines and `#` comments are ignored."""
        if isinstance(text, bytes):
            try:
                text = text.decode("ascii")
            except UnicodeDecodeError:
                raise KeyRingError("not base64 text") from None
        keys = []
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            try:
                keys.append(_b64decode(line))
            except (binascii.Error, ValueError):
                raise KeyRingError(f"line {number} is not base64") from None
        return cls.of(keys)

    def seal(self, plaintext: bytes, purpose: bytes) -> str:
        """URL-safe base64 of version, key id, nonce and ciphertext (cookie-safe)."""
        kid, cipher = self._ciphers[0]
        nonce = os.urandom(_NONCE_BYTES)
        head = _VERSION + kid + nonce
        return b64url(head + cipher.encrypt(nonce, plaintext, head + purpose))

    def open(self, sealed: str, purpose: bytes) -> Opened | None:
        """The plaintext, or None for anything this ring did not seal for `purpose`."""
        raw = unb64url(sealed)
        if raw is None or len(raw) < _HEAD + _TAG_BYTES or raw[:1] != _VERSION:
            return None
        kid, nonce = raw[1 : 1 + _KID_BYTES], raw[1 + _KID_BYTES : _HEAD]
        for index, (known, cipher) in enumerate(self._ciphers):
            if known != kid:
                continue
            try:
                plaintext = cipher.decrypt(nonce, raw[_HEAD:], raw[:_HEAD] + purpose)
            except InvalidTag:
                return None
            return Opened(plaintext, index > 0)
        return None
