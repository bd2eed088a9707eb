"""Custom deny answers (Authorino's `denyWith`), compiled: what a policy or rule answers
instead of authz's own 401 or 403. The request path (request/respond.py) renders them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DenyResponse:
    """A replacement deny answer. `status` None keeps the reason's own status; `body` None
    keeps authz's JSON body (none with a redirect). `redirect` sends the client to a URL,
    with the URL it asked for in the query parameter `original` (when named)."""

    status: int | None = None
    body: str | None = None
    headers: tuple[tuple[str, str], ...] = ()  # lower-case names
    redirect: str | None = None
    original: str | None = None

    @property
    def overrides_challenge(self) -> bool:
        """A `WWW-Authenticate` header given here replaces the RFC 6750 challenge."""
        return any(name == "www-authenticate" for name, _ in self.headers)


@dataclass(frozen=True, slots=True)
class DenyWith:
    """Custom answers for 401 denials (`unauthenticated`: no valid token) and for 403
    denials (`unauthorized`: a policy said no). 400 answers are never replaced."""

    unauthenticated: DenyResponse | None = None
    unauthorized: DenyResponse | None = None

    def for_status(self, status: int) -> DenyResponse | None:
        if status == 401:
            return self.unauthenticated
        return self.unauthorized if status == 403 else None
