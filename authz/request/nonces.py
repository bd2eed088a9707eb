"""DPoP server nonces (RFC 9449 section 9): proofs must carry a value the server chose recently.

A nonce is stateless: the number of the current time slot and an HMAC of it under a
secret, base64url. Any replica holding the same secret (`--dpop-nonce-secret-file`)
accepts the nonces of the others, with nothing shared at run time. A nonce is accepted
during its own slot and the next, so it lives between one and two slots. Without a secret
file each process picks a random one, which only suits a single process.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

_MAC_BYTES = 16
_SLOT_BYTES = 8


class Nonces:
    def __init__(
        self,
        secret: bytes | None = None,
        *,
        period: int = 120,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret if secret else secrets.token_bytes(32)
        self.period = max(1, period)
        self._clock = clock

    def _slot(self) -> int:
        return int(self._clock() // self.period)

    def _mac(self, slot: bytes) -> bytes:
        return hmac.digest(self._secret, slot, hashlib.sha256)[:_MAC_BYTES]

    def current(self) -> str:
        """The nonce to hand out now (the `DPoP-Nonce` header)."""
        slot = self._slot().to_bytes(_SLOT_BYTES, "big")
        return base64.urlsafe_b64encode(slot + self._mac(slot)).rstrip(b"=").decode("ascii")

    def valid(self, nonce: str | None) -> bool:
        """True for a nonce of this slot or the one before, made with our secret."""
        if not nonce or len(nonce) > 64 or not nonce.isascii():
            return False
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (binascii.Error, ValueError):
            return False
        if len(raw) != _SLOT_BYTES + _MAC_BYTES:
            return False
        slot, mac = raw[:_SLOT_BYTES], raw[_SLOT_BYTES:]
        if not hmac.compare_digest(mac, self._mac(slot)):
            return False
        return 0 <= self._slot() - int.from_bytes(slot, "big") <= 1
