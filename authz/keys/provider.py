"""What the Check path and status readers need from an issuer's keys, and fixed key sets.

`KeyProvider` is the one interface: `current()` never blocks, `await_refresh()` may wait a
bounded time for a refetch running elsewhere (or, asked not to, say that it would),
`state()` says what is loaded and why.
`StaticKeys` are keys fixed at compile time; remote sources live in `authz.keys.remote`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from authz.keys.jwk import KeySet


@dataclass(frozen=True, slots=True)
class Clock:
    """Monotonic time for scheduling, wall time for what is shown; injectable for tests."""

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time


SYSTEM_CLOCK = Clock()


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class KeyState:
    """One issuer's keys as of now: what is loaded, from where, and how refreshing goes.

    Times are wall-clock seconds. `stale` means keys are served although the last
    refresh failed; `fetches` counts refresh attempts by FetchResult.
    """

    source: str
    kids: tuple[str, ...] = ()
    count: int = 0
    last_refresh: float | None = None
    last_attempt: float | None = None
    next_refresh: float | None = None
    last_error: str | None = None
    stale: bool = False
    warnings: tuple[str, ...] = ()
    fetches: dict[str, int] = field(default_factory=dict)
    unknown_kid_refetches: int = 0
    waits_cut_short: int = 0  # unknown-kid waits that found no long-wait slot

    @property
    def ready(self) -> bool:
        return self.count > 0

    def age(self, now: float) -> float | None:
        """Seconds since the keys were last loaded, or None if none are."""
        return None if self.last_refresh is None or not self.ready else now - self.last_refresh

    def status(self) -> dict[str, Any]:
        """The CRD `status.keys` shape (camelCase, RFC 3339 times); unset fields are left out.

        Counters stay in the metrics, so the status only changes when the keys or their
        health do (and a refresh is attempted).
        """
        out: dict[str, Any] = {
            "source": self.source,
            "ready": self.ready,
            "count": self.count,
            "kids": list(self.kids),
            "lastRefresh": _iso(self.last_refresh),
            "lastAttempt": _iso(self.last_attempt),
            "nextRefresh": _iso(self.next_refresh),
            "lastError": self.last_error,
            "stale": self.stale,
            "warnings": list(self.warnings),
        }
        return {k: v for k, v in out.items() if v is not None and v not in ([], {})}


class KeyProvider(Protocol):
    """What the Check path and the status readers need from an issuer's keys."""

    def current(self) -> KeySet:
        """The keys to verify with now; never blocks."""
        ...

    def await_refresh(self, kid: str | None, alg: str, *, wait: bool = True) -> KeySet | None:
        """Called on a miss: may wait (bounded) for a refetch; returns the keys then.
        With `wait=False` it never blocks: None means a refetch is under way (or was just
        started) that could bring the key, so the caller may retry where waiting is cheap."""
        ...

    def state(self) -> KeyState: ...


class StaticKeys:
    """Keys fixed at compile time (inline JWKS, files, PEM keys, HMAC secret).

    A changed file comes in as a new snapshot; if its keys changed, the issuer is a new
    object and tokens cached for the old one no longer count.
    """

    def __init__(
        self, keys: KeySet, source: str, warnings: Iterable[str] = (), clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self._keys = keys
        self._state = KeyState(
            source, keys.kids, len(keys.keys), last_refresh=clock.wall(), warnings=tuple(warnings)
        )

    def current(self) -> KeySet:
        return self._keys

    def await_refresh(self, kid: str | None, alg: str, *, wait: bool = True) -> KeySet | None:
        return self._keys

    def state(self) -> KeyState:
        return self._state
