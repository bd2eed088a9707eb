"""An OpenID provider's metadata (OIDC Discovery 1.0): where to send a browser to sign in,
where to redeem a code, where to end a session. Fetched on the jobs pool, never by a Check.

The document must name exactly the issuer it was fetched for (section 4.3), and every
endpoint must be an https URL (plain http only where the issuer allows it, for development).
Known metadata is served while a refresh runs; a failed fetch is retried no sooner than
`retry` seconds later, so a provider that is down costs one fetch per interval.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass

from authz.keys.fetch import FetchError, FetchResult
from authz.keys.sources import discovery_url, url_problem
from authz.oidc.http import HttpSettings, request_json
from authz.oidc.jobs import Jobs

MAX_PROVIDERS = 1000


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    end_session_endpoint: str | None = None
    revocation_endpoint: str | None = None


def parse_metadata(doc: object, issuer: str, allow_http: bool) -> ProviderMetadata:
    """The endpoints of a discovery document for `issuer`; raises FetchError."""
    if not isinstance(doc, dict):
        raise FetchError(FetchResult.INVALID, "discovery document is not a JSON object")
    if doc.get("issuer") != issuer:
        raise FetchError(
            FetchResult.ISSUER_MISMATCH,
            f"discovery document names issuer {str(doc.get('issuer'))[:200]!r}, not {issuer!r}",
        )

    def endpoint(name: str, required: bool) -> str | None:
        value = doc.get(name)
        if value is None and not required:
            return None
        if not isinstance(value, str):
            raise FetchError(FetchResult.INVALID, f"discovery document has no {name}")
        problem = url_problem(value, allow_http)
        if problem is not None:
            raise FetchError(FetchResult.INVALID, f"discovery {name}: {problem}")
        return value

    methods = doc.get("code_challenge_methods_supported")
    if isinstance(methods, list) and "S256" not in methods:
        raise FetchError(FetchResult.INVALID, "the provider does not support PKCE S256")
    authorize, token = endpoint("authorization_endpoint", True), endpoint("token_endpoint", True)
    assert authorize is not None and token is not None
    return ProviderMetadata(
        issuer,
        authorize,
        token,
        endpoint("end_session_endpoint", False),
        endpoint("revocation_endpoint", False),
    )


def fetch_metadata(issuer: str, settings: HttpSettings) -> ProviderMetadata:
    """One discovery fetch (a job, never a Check); raises FetchError."""
    url = discovery_url(issuer)
    reply = request_json("GET", url, settings)
    if reply.status != 200:
        raise FetchError(FetchResult.HTTP_STATUS, f"{url}: HTTP {reply.status}")
    return parse_metadata(reply.document, issuer, settings.allow_http)


@dataclass(slots=True)
class _Known:
    metadata: ProviderMetadata | None
    at: float  # monotonic: when fetched (or when the fetch failed)
    error: str = ""


class Discovery:
    """Metadata by (issuer, how to reach it)."""

    def __init__(
        self,
        jobs: Jobs,
        *,
        refresh: float = 3600.0,
        retry: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._jobs = jobs
        self._refresh = refresh
        self._retry = retry
        self._clock = clock
        self._known: dict[tuple[str, HttpSettings], _Known] = {}
        self._lock = threading.Lock()

    def lookup(
        self, issuer: str, settings: HttpSettings
    ) -> ProviderMetadata | futures.Future[ProviderMetadata]:
        """The metadata, or the fetch to wait for. Raises FetchError when the last fetch
        failed less than `retry` seconds ago, or when the pool is too busy to fetch."""
        key = (issuer, settings)
        now = self._clock()
        with self._lock:
            known = self._known.get(key)
        if known is not None:
            age = now - known.at
            if known.metadata is not None:
                if age >= self._refresh:
                    self._start(key)  # served stale meanwhile; a failure keeps the old
                return known.metadata
            if age < self._retry:
                raise FetchError(FetchResult.CONNECT_ERROR, known.error)
            self._jobs.forget(("discovery", key))
        future = self._start(key)
        if future is None:
            raise FetchError(FetchResult.TIMEOUT, "too many sign-in jobs pending")
        return future

    def _start(self, key: tuple[str, HttpSettings]) -> futures.Future[ProviderMetadata] | None:
        future = self._jobs.run(("discovery", key), lambda: fetch_metadata(*key))
        if future is not None:
            future.add_done_callback(lambda f: self._store(key, f))
        return future

    def _store(
        self, key: tuple[str, HttpSettings], future: futures.Future[ProviderMetadata]
    ) -> None:
        now = self._clock()
        error = (
            future.exception()
            if not future.cancelled()
            else FetchError(FetchResult.TIMEOUT, "cancelled")
        )
        with self._lock:
            if len(self._known) >= MAX_PROVIDERS and key not in self._known:
                self._known.clear()
            old = self._known.get(key)
            if error is None:
                self._known[key] = _Known(future.result(), now)
            elif old is not None and old.metadata is not None:
                old.at = now - self._refresh + self._retry  # keep serving; try again soon
            else:
                self._known[key] = _Known(None, now, str(error)[:300])
        self._jobs.forget(("discovery", key))
