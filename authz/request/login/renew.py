"""Sessions from token responses: made at the callback, renewed with the refresh token.

Both run as jobs (the token endpoint is I/O). A renewal checks the new ID token as the
first one was checked (but for the nonce, which a refreshed ID token need not repeat) and
stores a Redis session before it is handed out. With Redis, one replica renews a session
at a time: the others wait for its result in the store, so a rotating refresh token is
never presented twice (a provider may read that as theft and revoke the whole family).
"""

from __future__ import annotations

import hashlib
import time

from authz.oidc.provider import ProviderMetadata
from authz.oidc.tokens import TokenSet, refresh
from authz.policy.issuer import CompiledIssuer
from authz.policy.login import LoginSettings
from authz.request.decision import Reason
from authz.request.jose import TokenError
from authz.request.login.idtoken import check_id_token
from authz.request.login.jar import SessionJar
from authz.request.login.runtime import LoginRuntime
from authz.request.login.session import Session, claims_of

# How long a replica that lost the race to renew waits for the winner's result.
_FOLLOW_SECONDS = 5.0
_FOLLOW_POLL = 0.1


def session_from(
    tokens: TokenSet, login: LoginSettings, now: float, previous: Session | None = None
) -> Session:
    """The session a token response makes (or renews: sign-in time and id are kept, and
    what a refresh response leaves out is kept from before)."""
    if tokens.expires_in is not None:
        expires: float | None = now + tokens.expires_in
    else:
        id_token = tokens.id_token or (previous.id_token if previous else None)
        exp = claims_of(id_token).get("exp")
        expires = float(exp) if isinstance(exp, int | float) else None
    return Session(
        iss=login.iss,
        client_id=login.client.client_id,
        created=previous.created if previous else now,
        seen=now,
        expires=expires,
        id_token=tokens.id_token or (previous.id_token if previous else None),
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token or (previous.refresh_token if previous else None),
        scope=tokens.scope if tokens.scope is not None else (previous.scope if previous else ""),
        sid=previous.sid if previous else "",
    )


def refresh_key(session: Session) -> str:
    """What identifies one renewal: the refresh token it spends."""
    assert session.refresh_token is not None
    return hashlib.sha256(session.refresh_token.encode()).hexdigest()


def renew(
    session: Session,
    login: LoginSettings,
    issuer: CompiledIssuer,
    *,
    metadata: ProviderMetadata,
    jar: SessionJar,
    runtime: LoginRuntime,
) -> Session:
    """Spend the refresh token (a job); raises GrantRefused (the session ends), FetchError
    or SessionStoreError (try again later), TokenError (the new ID token failed a check)."""
    assert session.refresh_token is not None
    store = runtime.redis if login.session.store == "redis" else None
    if store is not None and not store.once(f"refresh:{refresh_key(session)}", 30.0):
        return _follow(session, login, jar)
    tokens = refresh(metadata.token_endpoint, login.client, session.refresh_token, login.http)
    now = runtime.clock()
    if tokens.id_token is not None:
        check_id_token(
            tokens.id_token,
            issuer,
            client_id=login.client.client_id,
            nonce=None,
            access_token=tokens.access_token,
            now=now,
        )
        if claims_of(tokens.id_token).get("sub") != session.id_claims().get("sub"):
            raise TokenError(Reason.ID_TOKEN_INVALID, "the refreshed ID token names another sub")
    return jar.persist(session_from(tokens, login, now, session), login)


def _follow(session: Session, login: LoginSettings, jar: SessionJar) -> Session:
    """Another replica is renewing this session: wait for its record in the store."""
    deadline = time.monotonic() + _FOLLOW_SECONDS
    while time.monotonic() < deadline:
        time.sleep(_FOLLOW_POLL)
        current = jar.load(session.sid, login)
        if current is None:
            raise TokenError(Reason.SESSION_EXPIRED, "the session is gone from the store")
        if current.refresh_token != session.refresh_token:
            return current
    raise TokenError(Reason.PROVIDER_UNAVAILABLE, "another replica's renewal did not finish")
