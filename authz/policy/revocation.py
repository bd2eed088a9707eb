"""Revoked tokens, compiled for the request path: dictionary lookups by jti, subject and issuer.

Every TokenRevocation's entries are merged into one `Revocations` in the snapshot, indexed
by their most specific field (jti, else subject, else issuer), so checking a token costs a
few dictionary lookups however long the lists are, and nothing when there are none. An
entry matches when every field it gives matches the token and, if it has `issuedBefore`,
the token's `iat` is earlier (a token without `iat` cannot show it was issued later, so it
matches). An entry lapses when no token it matches can still be valid: at its `expiresAt`,
or `maxTokenLifetimeSeconds` after its `issuedBefore`, plus SKEW_MARGIN either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# The largest clock skew an issuer may allow (its clockSkewSeconds maximum): a token is
# accepted this long past its exp, so an entry must outlive the tokens it covers by as much.
SKEW_MARGIN = 600


@dataclass(frozen=True, slots=True)
class RevokedEntry:
    """One entry of a TokenRevocation; `source` names the object, `index` the entry."""

    source: str
    index: int
    lapses_at: float
    jti: str | None = None
    subject: str | None = None
    issuer: str | None = None
    issued_before: float | None = None

    def matches(self, iss: str, claims: Mapping[str, Any]) -> bool:
        if self.issuer is not None and self.issuer != iss:
            return False
        if self.jti is not None and claims.get("jti") != self.jti:
            return False
        if self.subject is not None and claims.get("sub") != self.subject:
            return False
        if self.issued_before is None:
            return True
        iat = claims.get("iat")
        if type(iat) is bool or not isinstance(iat, int | float):
            return True  # no usable iat: it cannot show it was issued after
        return bool(iat < self.issued_before)

    def describe(self) -> str:
        fields = [f"{k}={v!r}" for k, v in (("jti", self.jti), ("sub", self.subject), ("iss", self.issuer)) if v is not None]  # fmt: skip
        return f"{self.source} entries[{self.index}] ({', '.join(fields)})"


@dataclass(frozen=True, slots=True)
class RevocationList:
    """One TokenRevocation object, compiled."""

    key: str
    entries: tuple[RevokedEntry, ...] = ()

    def counts(self, now: float) -> tuple[int, int]:
        """(active, lapsed) entries at `now`."""
        active = sum(1 for e in self.entries if now < e.lapses_at)
        return active, len(self.entries) - active


@dataclass(frozen=True, slots=True)
class Revocations:
    """Every revocation list serving, indexed. Empty: falsy, and never consulted."""

    lists: Mapping[str, RevocationList] = field(default_factory=dict)
    by_jti: Mapping[str, tuple[RevokedEntry, ...]] = field(default_factory=dict)
    by_subject: Mapping[str, tuple[RevokedEntry, ...]] = field(default_factory=dict)
    by_issuer: Mapping[str, tuple[RevokedEntry, ...]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.by_jti or self.by_subject or self.by_issuer)

    @classmethod
    def merge(cls, lists: Iterable[RevocationList], now: float) -> Revocations:
        """Index the entries not yet lapsed at `now` (lapsed ones are only counted)."""
        by_jti: dict[str, list[RevokedEntry]] = {}
        by_subject: dict[str, list[RevokedEntry]] = {}
        by_issuer: dict[str, list[RevokedEntry]] = {}
        kept = {}
        for revocation in lists:
            kept[revocation.key] = revocation
            for entry in revocation.entries:
                if now >= entry.lapses_at:
                    continue
                if entry.jti is not None:
                    by_jti.setdefault(entry.jti, []).append(entry)
                elif entry.subject is not None:
                    by_subject.setdefault(entry.subject, []).append(entry)
                elif entry.issuer is not None:
                    by_issuer.setdefault(entry.issuer, []).append(entry)
        return cls(
            kept,
            {k: tuple(v) for k, v in by_jti.items()},
            {k: tuple(v) for k, v in by_subject.items()},
            {k: tuple(v) for k, v in by_issuer.items()},
        )

    def revoked(self, iss: str, claims: Mapping[str, Any], now: float) -> RevokedEntry | None:
        """The first entry that revokes a token of `iss` with these claims, or None."""
        candidates: list[tuple[RevokedEntry, ...]] = []
        jti = claims.get("jti")
        if isinstance(jti, str) and self.by_jti:
            candidates.append(self.by_jti.get(jti, ()))
        sub = claims.get("sub")
        if isinstance(sub, str) and self.by_subject:
            candidates.append(self.by_subject.get(sub, ()))
        if self.by_issuer:
            candidates.append(self.by_issuer.get(iss, ()))
        for entries in candidates:
            for entry in entries:
                if now < entry.lapses_at and entry.matches(iss, claims):
                    return entry
        return None


NO_REVOCATIONS = Revocations()
