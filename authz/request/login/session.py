"""A signed-in session: who signed in where, when, and the tokens the provider issued.

Serialised compactly (it travels in a cookie) and only ever stored sealed. The ID token's
claims are read from the stored token without checking its signature again: it was checked
when the session was made, and nobody but authz can seal a session.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field, replace
from typing import Any

_FIELDS = ("i", "c", "t0", "t1", "x", "it", "at", "rt", "s")


@dataclass(frozen=True, slots=True)
class Session:
    iss: str  # the provider
    client_id: str  # the client it signed in to (a session is good for that client only)
    created: float  # sign-in (the absolute timeout counts from here)
    seen: float  # last use as recorded (the idle timeout counts from here)
    expires: float | None  # when the tokens expire (a refresh is due before), None: never
    id_token: str | None = field(default=None, repr=False)
    access_token: str = field(default="", repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    scope: str = ""
    sid: str = field(default="", repr=False)  # the server-side id (store: redis), not stored

    def to_bytes(self) -> bytes:
        values = (
            self.iss,
            self.client_id,
            round(self.created, 3),
            round(self.seen, 3),
            None if self.expires is None else round(self.expires, 3),
            self.id_token,
            self.access_token,
            self.refresh_token,
            self.scope,
        )
        record = {k: v for k, v in zip(_FIELDS, values, strict=True) if v is not None}
        return json.dumps(record, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes, sid: str = "") -> Session | None:
        """The session in `data`, or None if it is not one (an older format, say)."""
        try:
            record = json.loads(data)
        except ValueError:
            return None
        if not isinstance(record, dict):
            return None
        strings = {k: record.get(k) for k in ("i", "c", "at", "s")}
        optional = {k: record.get(k) for k in ("it", "rt")}
        times = {k: record.get(k) for k in ("t0", "t1")}
        expires = record.get("x")
        if not all(isinstance(v, str) for v in strings.values()):
            return None
        if not all(v is None or isinstance(v, str) for v in optional.values()):
            return None
        if not all(_number(v) for v in times.values()) or not (expires is None or _number(expires)):
            return None
        return cls(
            iss=record["i"],
            client_id=record["c"],
            created=float(record["t0"]),
            seen=float(record["t1"]),
            expires=None if expires is None else float(expires),
            id_token=record.get("it"),
            access_token=record["at"],
            refresh_token=record.get("rt"),
            scope=record["s"],
            sid=sid,
        )

    def used(self, now: float) -> Session:
        return replace(self, seen=now)

    def id_claims(self) -> dict[str, Any]:
        """The ID token's claims (empty when there is none or it cannot be read)."""
        return claims_of(self.id_token)


def claims_of(id_token: str | None) -> dict[str, Any]:
    """A JWT's claims, read without checking its signature (only for tokens authz checked
    before it sealed them); empty when there is none or it cannot be read."""
    if id_token is None:
        return {}
    parts = id_token.split(".")
    if len(parts) != 3:
        return {}
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (binascii.Error, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
