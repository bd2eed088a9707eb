"""Where sessions are kept: sealed whole in the cookie (`store: cookie`), or in Redis with
only a sealed id in the cookie (`store: redis`: shared by replicas, deleted at logout).

Each sealed value is bound to its use (`purpose`): a session cookie is not a pre-login
cookie, a Redis record opens only with the id it was stored under. Redis is read and
written by jobs; a Check waits for a read within the policy's wait.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, replace

from authz.oidc.store import RedisSessions, SessionStoreError
from authz.policy.login import LoginSettings
from authz.request.decision import Reason
from authz.request.jose import TokenError
from authz.request.login import cookies
from authz.request.login.runtime import LoginRuntime
from authz.request.login.session import Session

SESSION = b"session"
SESSION_ID = b"session-id"
# A session's record outlives its idle timeout in Redis by this much, so a clock skew
# between replicas never loses a live session (the timeouts themselves are checked here).
_GRACE = 60.0


@dataclass(frozen=True, slots=True)
class Opened:
    session: Session
    stale: bool  # sealed with an older key of the ring: seal it again with the newest


class SessionJar:
    def __init__(self, runtime: LoginRuntime) -> None:
        self._runtime = runtime

    # -- reading -----------------------------------------------------------------------------

    def open(self, sealed: str, login: LoginSettings, *, may_wait: bool) -> Opened:
        """The session behind a cookie value; raises TokenError (session_invalid: forged,
        damaged or sealed with a key no longer in the ring; session_expired: gone from
        Redis; provider_unavailable: Redis did not answer in time) or WouldWait."""
        ring = login.session.keys
        if login.session.store == "cookie":
            opened = ring.open(sealed, SESSION)
            session = Session.from_bytes(opened.plaintext) if opened is not None else None
            if opened is None or session is None:
                raise TokenError(Reason.SESSION_INVALID, "the session cookie does not open")
            return Opened(session, opened.stale)
        opened = ring.open(sealed, SESSION_ID)
        if opened is None:
            raise TokenError(Reason.SESSION_INVALID, "the session cookie does not open")
        sid = opened.plaintext.decode("ascii", "replace")
        key = ("session-read", _key(sid))
        future = self._runtime.jobs.run(key, lambda: self.load(sid, login))
        if not self._runtime.settle(future, login.wait, may_wait=may_wait):
            raise TokenError(Reason.PROVIDER_UNAVAILABLE, "the session store did not answer")
        assert future is not None
        self._runtime.jobs.forget(key)  # the next request reads afresh
        try:
            session = future.result()
        except SessionStoreError as exc:
            raise TokenError(Reason.PROVIDER_UNAVAILABLE, str(exc)) from None
        if session is None:
            raise TokenError(Reason.SESSION_EXPIRED, "the session is gone from the store")
        return Opened(session, opened.stale)

    def load(self, sid: str, login: LoginSettings) -> Session | None:
        """Read a Redis session (in a job); None when it is gone. Raises TokenError when
        the record does not open, SessionStoreError when Redis fails."""
        record = self._store().get(_key(sid))
        if record is None:
            return None
        opened = login.session.keys.open(record.decode("ascii", "replace"), _record_purpose(sid))
        session = Session.from_bytes(opened.plaintext, sid) if opened is not None else None
        if session is None:
            raise TokenError(Reason.SESSION_INVALID, "the stored session does not open")
        return session

    # -- writing -----------------------------------------------------------------------------

    def cookies(self, session: Session, login: LoginSettings, held: int) -> tuple[str, ...]:
        """Set-Cookie values that give the browser this session (`held`: how many parts of
        a session cookie it sent, so that leftovers are cleared). A Redis session must
        already be stored (`persist`)."""
        ring, settings = login.session.keys, login.session
        max_age = int(session.created + settings.absolute - self._runtime.clock())
        if settings.store == "cookie":
            value = ring.seal(session.to_bytes(), SESSION)
        else:
            value = ring.seal(session.sid.encode(), SESSION_ID)
        names = cookies.chunk_names(settings.cookie)[:held]
        try:
            return cookies.write_chunked(settings.cookie, value, names, max_age=max_age)
        except ValueError as exc:
            raise TokenError(
                Reason.LOGIN_FAILED, f"the session is too large for cookies ({exc}): use Redis"
            ) from None

    def persist(self, session: Session, login: LoginSettings) -> Session:
        """Store a Redis session (run by a job), giving it an id if it has none."""
        if login.session.store != "redis":
            return session
        if not session.sid:
            session = replace(session, sid=secrets.token_urlsafe(32))
        record = login.session.keys.seal(session.to_bytes(), _record_purpose(session.sid))
        self._store().put(_key(session.sid), record.encode(), self._ttl(session, login))
        return session

    def touch(self, session: Session, login: LoginSettings) -> None:
        """Record a use (the idle timeout starts again): in the cookie by the caller, in
        Redis by a job nobody waits for."""
        if login.session.store == "redis":
            self._runtime.jobs.spawn(lambda: self.persist(session, login))

    def end(self, session: Session | None, login: LoginSettings, held: int) -> tuple[str, ...]:
        """Clear the browser's session cookies; a Redis record is deleted by a job."""
        if session is not None and session.sid and login.session.store == "redis":
            store, key = self._store(), _key(session.sid)
            self._runtime.jobs.spawn(lambda: store.delete(key))
        names = cookies.chunk_names(login.session.cookie)[: max(held, 1)]
        return cookies.clear_chunked(login.session.cookie, names)

    def _ttl(self, session: Session, login: LoginSettings) -> float:
        now = self._runtime.clock()
        left = session.created + login.session.absolute - now
        return max(1.0, min(left, session.seen + login.session.idle - now) + _GRACE)

    def _store(self) -> RedisSessions:
        store = self._runtime.redis
        if store is None:
            raise TokenError(
                Reason.SESSION_INVALID,
                "the policy keeps sessions in Redis, but authz serve has no --session-redis",
            )
        return store


def _key(sid: str) -> str:
    """The Redis key of a session id: its hash, so the key alone does not open a record."""
    return hashlib.sha256(sid.encode()).hexdigest()


def _record_purpose(sid: str) -> bytes:
    return b"session-record:" + sid.encode()


def held_parts(sealed: str) -> int:
    """How many cookie parts a sealed value read from the request came in."""
    return max(1, -(-len(sealed) // cookies.CHUNK))
