"""The browser session (issue 15): the session cookie browser sign-in set, as a request's
credential. It counts like a bearer token: its identity goes through the same authorize
step and identity headers.

`find` reads the cookie (and refuses a state-changing request from another origin: the
cookie rides along on same-site requests, which is what CSRF abuses). `verify` opens the
session, applies the idle and absolute timeouts, renews the tokens with the refresh token
shortly before they expire (a job; the Check waits within the policy's wait and, while the
old tokens are still good, goes on without the result) and reads the identity: the ID
token's claims with the granted scopes, or the access token checked as a bearer token.
A session that ended is cleared from the browser in the same answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent import futures

from authz.keys.fetch import FetchError
from authz.oidc.provider import ProviderMetadata
from authz.oidc.store import SessionStoreError
from authz.oidc.tokens import GrantRefused
from authz.policy.issuer import CompiledIssuer, TokenSource
from authz.policy.login import LoginSettings
from authz.policy.snapshot import CompiledPolicy
from authz.request.cache import TokenCache
from authz.request.claims import collect
from authz.request.credentials import Authentication, Presented
from authz.request.credentials.bearer_jwt import check_audience
from authz.request.decision import Identity, Reason
from authz.request.jose import TokenError
from authz.request.login import cookies
from authz.request.login.browser import cross_origin
from authz.request.login.jar import SessionJar, held_parts
from authz.request.login.renew import refresh_key, renew
from authz.request.login.runtime import LoginRuntime
from authz.request.login.session import Session
from authz.request.verify import VerifiedToken, verify
from authz.request.view import RequestView

# A renewal's result is kept this long: with cookie sessions, the refresh token it spent is
# gone at the provider, and a browser whose answer did not carry the renewed cookie (a
# Check that stopped waiting, a concurrent request) still sends the old one.
_KEEP_RENEWED = 600.0
_CHAINED = 3
# A use is written back (cookie re-sealed, Redis record extended) at most this often,
# and never less often than a tenth of the idle timeout.
_TOUCH_SECONDS = 60.0


class SessionCookie:
    def __init__(
        self,
        runtime: LoginRuntime,
        cache: TokenCache,
        *,
        max_token_bytes: int = 16384,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._runtime = runtime
        self._jar = SessionJar(runtime)
        self._cache = cache
        self._max_token_bytes = max_token_bytes
        self._clock = clock

    def find(self, request: RequestView, policy: CompiledPolicy) -> Presented | None:
        login = policy.login
        if login is None:
            return None
        header = request.headers.get("cookie")
        if not header or login.session.cookie not in header:
            return None
        sealed = cookies.read_chunked(cookies.parse(header), login.session.cookie)
        if sealed is None:
            return None
        refused = cross_origin(request, login)
        if refused is not None:
            raise TokenError(Reason.CSRF_REJECTED, refused)
        return Presented(self, sealed, TokenSource("cookie", login.session.cookie))

    def verify(
        self, presented: Presented, policy: CompiledPolicy, *, may_wait: bool = True
    ) -> Authentication:
        login = policy.login
        assert login is not None
        source = presented.source
        held = held_parts(presented.secret)
        session: Session | None = None
        try:
            opened = self._jar.open(presented.secret, login, may_wait=may_wait)
            session = opened.session
            issuer = _provider(policy, login, session)
            now = self._clock()
            _check_timeouts(session, login, now)
            renewed = self._renewed(session, login, issuer, now, may_wait=may_wait)
            changed = opened.stale and login.session.store == "cookie"
            if renewed is not None:  # a Redis session was stored renewed by the job
                session = renewed
                changed = changed or login.session.store == "cookie"
            if session.expires is not None and now >= session.expires:
                raise TokenError(Reason.SESSION_EXPIRED, "the session's tokens expired")
            verified = self._identity(session, login, issuer, policy, now, may_wait=may_wait)
            if now - session.seen >= min(_TOUCH_SECONDS, login.session.idle / 10):
                session = session.used(now)
                changed = changed or login.session.store == "cookie"
                self._jar.touch(session, login)
            sent = self._jar.cookies(session, login, held) if changed else ()
        except TokenError as exc:
            ended = exc.reason in (Reason.SESSION_EXPIRED, Reason.SESSION_INVALID)
            gone = self._jar.end(session, login, held) if ended else ()
            return Authentication(None, exc, source=source, cookies=gone)
        return Authentication(verified.identity, None, verified, source, cookies=sent)

    def _renewed(
        self,
        session: Session,
        login: LoginSettings,
        issuer: CompiledIssuer,
        now: float,
        *,
        may_wait: bool,
    ) -> Session | None:
        """The session renewed with its refresh token when it is due, else None. The Check
        waits for the renewal within the policy's wait, so that its answer carries the
        renewed session; past the wait it goes on with the old tokens while they last (the
        result is kept for the next request). A refused refresh ends the session."""
        renewed = None
        for _ in range(_CHAINED):  # a renewal kept from earlier may itself be due by now
            if (
                session.refresh_token is None
                or session.expires is None
                or now < session.expires - login.refresh_before
            ):
                break
            expired = now >= session.expires
            try:  # while the old tokens are good, a slow provider is not waited for
                metadata = self._runtime.metadata(login, may_wait=may_wait, wait=expired)
            except TokenError:
                if expired:
                    raise
                break
            future = self._renewal(session, login, issuer, metadata)
            if not self._runtime.settle(future, login.wait, may_wait=may_wait):
                if expired:
                    raise TokenError(Reason.PROVIDER_UNAVAILABLE, "the session is being renewed")
                break
            assert future is not None
            try:
                session = renewed = future.result()
            except GrantRefused as exc:
                raise TokenError(Reason.SESSION_EXPIRED, f"refresh refused: {exc.error}") from None
            except (FetchError, SessionStoreError) as exc:
                if expired:
                    raise TokenError(Reason.PROVIDER_UNAVAILABLE, f"refresh: {exc}") from None
                break
        return renewed

    def _renewal(
        self,
        session: Session,
        login: LoginSettings,
        issuer: CompiledIssuer,
        metadata: ProviderMetadata,
    ) -> futures.Future[Session] | None:
        """The job that spends this session's refresh token (one per token)."""
        return self._runtime.jobs.run(
            ("refresh", refresh_key(session)),
            lambda: renew(
                session, login, issuer, metadata=metadata, jar=self._jar, runtime=self._runtime
            ),
            keep=_KEEP_RENEWED,
        )

    def _identity(
        self,
        session: Session,
        login: LoginSettings,
        issuer: CompiledIssuer,
        policy: CompiledPolicy,
        now: float,
        *,
        may_wait: bool,
    ) -> VerifiedToken:
        """Who the session is: the ID token's claims (checked when the session was made), or
        the access token verified and audience-checked as a bearer token would be."""
        if login.identity == "accessToken":
            return self._access_token(session.access_token, policy, now, may_wait=may_wait)
        claims = session.id_claims()
        sub = claims.get("sub")
        if not isinstance(sub, str) or claims.get("iss") != issuer.issuer:
            raise TokenError(Reason.SESSION_INVALID, "the session has no ID token of its provider")
        identity = Identity(
            issuer=issuer.issuer,
            subject=sub,
            claims=claims,
            scopes=tuple(dict.fromkeys(s for s in session.scope.split(" ") if s)),
            roles=collect(claims, issuer.role_claims),
            kid=None,
        )
        return VerifiedToken(issuer, claims, None, session.expires, issuer.keys.current(), identity)

    def _access_token(
        self, token: str, policy: CompiledPolicy, now: float, *, may_wait: bool
    ) -> VerifiedToken:
        digest = TokenCache.digest(token)
        hit = self._cache.get(digest, now, _still_valid, policy)
        if hit is not None:
            verified = hit[0]
        else:
            verified = verify(
                token, policy.issuers_by_iss, now, self._max_token_bytes, may_wait=may_wait
            )
            self._cache.put(digest, verified, now)
        check_audience(verified, policy)
        return verified


def _provider(policy: CompiledPolicy, login: LoginSettings, session: Session) -> CompiledIssuer:
    """The policy's provider; a session signed in elsewhere (another provider or client
    sharing the cookie name on this host) is not one of this policy's."""
    if session.iss != login.iss or session.client_id != login.client.client_id:
        raise TokenError(Reason.SESSION_INVALID, "the session belongs to another sign-in")
    issuer = policy.issuers_by_iss.get(login.iss)
    if issuer is None:
        raise TokenError(Reason.ISSUER_NOT_TRUSTED, "the sign-in provider is not trusted")
    return issuer


def _check_timeouts(session: Session, login: LoginSettings, now: float) -> None:
    if now - session.created >= login.session.absolute:
        raise TokenError(Reason.SESSION_EXPIRED, "absolute timeout")
    if now - session.seen >= login.session.idle:
        raise TokenError(Reason.SESSION_EXPIRED, "idle timeout")


def _still_valid(cached: VerifiedToken, policy: CompiledPolicy) -> bool:
    issuer = cached.issuer
    return policy.issuers_by_iss.get(cached.claims["iss"]) is issuer and (
        issuer.keys.current() is cached.keys
    )
