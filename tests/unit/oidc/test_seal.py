"""Sealed cookies: nothing but the ring's keys opens them, rotation keeps them, and each
opens only for the use it was sealed for."""

from __future__ import annotations

import base64
import secrets

import pytest

from authz.oidc.seal import KeyRing, KeyRingError


def _ring(*keys: bytes) -> KeyRing:
    return KeyRing.parse("".join(base64.b64encode(k).decode() + "\n" for k in keys))


def test_a_sealed_value_opens_for_its_purpose_only() -> None:
    ring = _ring(secrets.token_bytes(32))
    sealed = ring.seal(b"alice's session", b"session")
    assert sealed.isascii() and ";" not in sealed and "=" not in sealed  # cookie-safe
    opened = ring.open(sealed, b"session")
    assert opened is not None and (opened.plaintext, opened.stale) == (b"alice's session", False)
    assert ring.open(sealed, b"pre-login") is None
    assert ring.seal(b"x", b"session") != ring.seal(b"x", b"session")  # a fresh nonce each time


@pytest.mark.parametrize(
    "damage", [lambda s: s[:-1], lambda s: s[:10] + "A" + s[11:], lambda s: "", lambda s: "!!"]
)
def test_a_damaged_value_does_not_open(damage: object) -> None:
    ring = _ring(secrets.token_bytes(32))
    sealed = ring.seal(b"value", b"p")
    assert callable(damage)
    changed = damage(sealed)
    if changed != sealed:
        assert ring.open(changed, b"p") is None


def test_rotation_opens_old_values_and_seals_with_the_newest() -> None:
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    sealed_before = _ring(old).seal(b"v", b"p")
    rotated = _ring(new, old)
    opened = rotated.open(sealed_before, b"p")
    assert opened is not None and opened.stale  # re-seal when convenient
    fresh = rotated.seal(b"v", b"p")
    assert _ring(new).open(fresh, b"p") is not None
    assert _ring(old).open(fresh, b"p") is None
    assert _ring(new).open(sealed_before, b"p") is None  # the old key removed: gone


def test_the_ring_text_format() -> None:
    key = secrets.token_bytes(32)
    text = f"# session keys, newest first\n\n{base64.urlsafe_b64encode(key).decode().rstrip('=')}  # 2026-12\n"
    ring = KeyRing.parse(text)
    assert ring.keys == (key,) and len(ring.kids[0]) == 8
    assert key.hex() not in repr(ring) and str(key) not in repr(ring)
    for bad, message in [
        ("", "no key"),
        ("# only a comment\n", "no key"),
        (base64.b64encode(b"short").decode(), "AES-256 needs 32"),
        ("not base64 at all!", "not base64"),
    ]:
        with pytest.raises(KeyRingError, match=message):
            KeyRing.parse(bad)
