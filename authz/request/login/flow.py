"""Browser sign-in's own requests and redirects, for policies with `login`:

* a navigation a rule denies for want of a session (`challenge`) is sent to the provider's
  authorization endpoint: code flow, PKCE S256, fresh `state` and `nonce`, all bound to a
  short-lived pre-login cookie (sealed, path-scoped to the callback) with the page to
  return to, a path on the same host; scripts keep their 401 (with the ended session's
  cookies cleared);
* `callbackPath` checks that the state is the one this browser was sent with (unused, not
  tampered with, not expired), redeems the code in a job (the Check waits within the
  policy's wait; the browser's page retries when the provider is slow), checks the ID
  token, sets the session and returns to the page;
* `logoutPath` ends the session and sends the browser to the provider's
  end_session_endpoint with `id_token_hint` and an allow-listed return URL;
* `loginPath` (optional) starts sign-in and returns to a same-host `return_to`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import urllib.parse
from collections.abc import Callable, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from typing import Protocol

from authz.keys.fetch import FetchError
from authz.oidc.provider import ProviderMetadata
from authz.oidc.store import SessionStoreError
from authz.oidc.tokens import GrantRefused, redeem, revoke
from authz.policy.issuer import CompiledIssuer, TokenSource
from authz.policy.login import LoginSettings
from authz.policy.snapshot import CompiledPolicy, CompiledRule
from authz.request.decision import BrowserStep, Decision, Identity, Reason
from authz.request.jose import TokenError
from authz.request.login import cookies
from authz.request.login.browser import (
    cross_origin,
    is_navigation,
    origin_of,
    safe_return,
    wants_page,
)
from authz.request.login.idtoken import check_id_token
from authz.request.login.jar import SessionJar, held_parts
from authz.request.login.renew import session_from
from authz.request.login.runtime import LoginRuntime
from authz.request.login.session import Session
from authz.request.verify import verify
from authz.request.view import RequestView

PRE_LOGIN = b"pre-login"
PRE_LOGIN_COOKIE = "authz-login-"
# The denials a session (or a sign-in) would cure.
_SIGN_IN_CURES = frozenset({Reason.TOKEN_MISSING, Reason.SESSION_EXPIRED, Reason.SESSION_INVALID})
# Denials about the session or sign-in itself: a person gets them as a page, and a slow
# provider's answer tells the browser when to retry.
_SESSION_DENIALS = frozenset(
    {
        Reason.SESSION_EXPIRED,
        Reason.SESSION_INVALID,
        Reason.CSRF_REJECTED,
        Reason.PROVIDER_UNAVAILABLE,
    }
)
_RETRY_SECONDS = 1

Handled = tuple[Decision, BrowserStep]


class Authenticated(Protocol):
    """What a denial's challenge reads of the authenticate step's result."""

    @property
    def source(self) -> TokenSource | None: ...
    @property
    def cookies(self) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class PreLogin:
    """What the pre-login cookie binds to one sign-in."""

    state: str
    nonce: str
    verifier: str = field(repr=False)  # the PKCE secret: never in a log line
    return_to: str
    redirect_uri: str
    expires: float
    client_id: str

    def seal(self, login: LoginSettings) -> str:
        fields = [
            self.state,
            self.nonce,
            self.verifier,
            self.return_to,
            self.redirect_uri,
            self.expires,
            self.client_id,
        ]
        return login.session.keys.seal(json.dumps(fields).encode(), PRE_LOGIN)

    @classmethod
    def open(cls, sealed: str, login: LoginSettings) -> PreLogin | None:
        opened = login.session.keys.open(sealed, PRE_LOGIN)
        if opened is None:
            return None
        try:
            fields = json.loads(opened.plaintext)
            state, nonce, verifier, return_to, redirect_uri, expires, client_id = fields
        except (ValueError, TypeError):
            return None
        return cls(state, nonce, verifier, return_to, redirect_uri, float(expires), client_id)


def _digest(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def pre_login_cookie(state: str) -> str:
    """One pre-login cookie per sign-in (several tabs may sign in at once)."""
    return PRE_LOGIN_COOKIE + _digest(state)[:16]


def _random(size: int) -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(size)).rstrip(b"=").decode()


def _query(request: RequestView) -> dict[str, list[str]]:
    _, _, query = request.raw_path.partition("?")
    return urllib.parse.parse_qs(query, keep_blank_values=True)


def _one(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values is not None and len(values) == 1 else None


class LoginFlow:
    def __init__(self, runtime: LoginRuntime, *, clock: Callable[[], float] = time.time) -> None:
        self._runtime = runtime
        self._jar = SessionJar(runtime)
        self._clock = clock

    # -- the pipeline's hooks ------------------------------------------------------------------

    def endpoint(
        self, request: RequestView, policy: CompiledPolicy, *, may_wait: bool
    ) -> Handled | None:
        login = policy.login
        assert login is not None
        if request.path not in login.paths:
            return None
        try:
            if request.path == login.callback_path:
                return self._callback(request, policy, login, may_wait=may_wait)
            if request.path == login.logout_path:
                return self._logout(request, policy, login, may_wait=may_wait)
            return self._login_path(request, policy, login, may_wait=may_wait)
        except TokenError as exc:
            rule = {login.callback_path: "(callback)", login.logout_path: "(logout)"}
            return self._failed(request, policy, exc, rule.get(request.path, "(login)"))

    def challenge(
        self,
        request: RequestView,
        policy: CompiledPolicy,
        rule: CompiledRule | None,
        denied: Decision,
        authentication: Authenticated | None,
        *,
        may_wait: bool,
    ) -> Handled | None:
        """A denial a browser can act on: a navigation that a session would let through is
        sent to sign in; a session that ended is cleared; a slow provider is retried."""
        login = policy.login
        assert login is not None
        by_session = (
            authentication is not None
            and authentication.source is not None
            and authentication.source.kind == "cookie"
            and authentication.source.name == login.session.cookie
        )
        cleared = authentication.cookies if authentication is not None else ()
        if (
            denied.reason in _SIGN_IN_CURES
            and (authentication is None or by_session)
            and (rule is None or rule.login)
            and is_navigation(request)
        ):
            try:
                return self._start(
                    request,
                    policy,
                    login,
                    denied,
                    return_to=safe_return(request.raw_path),
                    cleared=cleared,
                    may_wait=may_wait,
                )
            except TokenError as exc:
                return self._failed(request, policy, exc, denied.rule or "", cleared)
        if denied.reason in _SESSION_DENIALS or cleared:
            retry = _RETRY_SECONDS if denied.reason is Reason.PROVIDER_UNAVAILABLE else None
            return denied, BrowserStep(cookies=cleared, retry_after=retry, page=wants_page(request))
        return None

    # -- sign-in -------------------------------------------------------------------------------

    def _start(
        self,
        request: RequestView,
        policy: CompiledPolicy,
        login: LoginSettings,
        denied: Decision,
        *,
        return_to: str,
        cleared: tuple[str, ...] = (),
        may_wait: bool,
    ) -> Handled:
        """Redirect to the provider with a fresh state, nonce and PKCE verifier."""
        metadata = self._runtime.metadata(login, may_wait=may_wait)
        now = self._clock()
        pre = PreLogin(
            state=_random(24),
            nonce=_random(24),
            verifier=_random(48),
            return_to=return_to,
            redirect_uri=origin_of(request, login) + login.callback_path,
            expires=now + login.login_timeout,
            client_id=login.client.client_id,
        )
        challenge = base64.urlsafe_b64encode(hashlib.sha256(pre.verifier.encode()).digest())
        params = {
            **dict(login.parameters),
            "response_type": "code",
            "client_id": login.client.client_id,
            "redirect_uri": pre.redirect_uri,
            "scope": " ".join(login.scopes),
            "state": pre.state,
            "nonce": pre.nonce,
            "code_challenge": challenge.rstrip(b"=").decode(),
            "code_challenge_method": "S256",
        }
        endpoint = metadata.authorization_endpoint
        location = endpoint + ("&" if "?" in endpoint else "?") + urllib.parse.urlencode(params)
        cookie = cookies.set_cookie(
            pre_login_cookie(pre.state),
            pre.seal(login),
            path=login.callback_path,
            max_age=login.login_timeout,
        )
        detail = f"{denied.reason}: {denied.detail}" if denied.detail else denied.reason.value
        decision = Decision(False, Reason.LOGIN_REQUIRED, detail, policy.id, denied.rule)
        return decision, BrowserStep(location, (*cleared, cookie))

    def _login_path(
        self, request: RequestView, policy: CompiledPolicy, login: LoginSettings, *, may_wait: bool
    ) -> Handled:
        return_to = _one(_query(request), "return_to") or "/"
        if safe_return(return_to) != return_to:
            raise TokenError(Reason.REDIRECT_NOT_ALLOWED, "return_to must be a path on this host")
        start = Decision(False, Reason.TOKEN_MISSING, "", policy.id, "(login)")
        return self._start(request, policy, login, start, return_to=return_to, may_wait=may_wait)

    # -- the callback --------------------------------------------------------------------------

    def _callback(
        self, request: RequestView, policy: CompiledPolicy, login: LoginSettings, *, may_wait: bool
    ) -> Handled:
        if request.method not in ("GET", "HEAD"):
            raise TokenError(Reason.LOGIN_STATE_INVALID, "the callback takes GET")
        query = _query(request)
        state = _one(query, "state")
        if not state:
            raise TokenError(Reason.LOGIN_STATE_INVALID, "no state in the callback")
        name = pre_login_cookie(state)
        jar = cookies.parse(request.headers.get("cookie", ""))
        sent = jar.get(name)
        if not sent:
            raise TokenError(
                Reason.LOGIN_STATE_INVALID,
                "no sign-in started with this state here (expired, used, or another browser)",
            )
        pre = PreLogin.open(sent[0], login)
        clear = (cookies.clear_cookie(name, path=login.callback_path),)
        now = self._clock()
        if pre is None or not hmac.compare_digest(pre.state.encode(), state.encode()):
            raise _Refused(Reason.LOGIN_STATE_INVALID, "the state does not match", clear)
        if pre.client_id != login.client.client_id or now >= pre.expires:
            raise _Refused(Reason.LOGIN_STATE_INVALID, "the sign-in expired", clear)
        error = _one(query, "error")
        if error is not None:
            raise _Refused(Reason.LOGIN_FAILED, f"the provider answered {error[:64]!r}", clear)
        issued_by = _one(query, "iss")  # RFC 9207: a mix-up is refused
        if issued_by is not None and issued_by != login.iss:
            raise _Refused(Reason.LOGIN_FAILED, "the response names another issuer", clear)
        code = _one(query, "code")
        if not code:
            raise _Refused(Reason.LOGIN_STATE_INVALID, "no code in the callback", clear)
        digest = _digest(state)
        if self._runtime.used(digest):
            raise _Refused(Reason.LOGIN_STATE_INVALID, "this sign-in was completed already", clear)
        issuer = policy.issuers_by_iss[login.iss]
        metadata = self._runtime.metadata(login, may_wait=may_wait)
        future: futures.Future[tuple[Session, Identity]] | None = self._runtime.jobs.run(
            ("callback", digest),
            lambda: self._redeem(code, pre, policy, issuer=issuer, metadata=metadata),
        )
        if not self._runtime.settle(future, login.wait, may_wait=may_wait):
            raise TokenError(Reason.PROVIDER_UNAVAILABLE, "the code exchange is still running")
        assert future is not None
        if not self._runtime.use_state(digest, pre.expires):
            raise _Refused(Reason.LOGIN_STATE_INVALID, "this sign-in was completed already", clear)
        try:
            session, who = future.result()
        except TokenError as exc:
            raise _Refused(exc.reason, exc.detail, clear) from None
        except GrantRefused as exc:
            raise _Refused(Reason.LOGIN_FAILED, f"the code was refused: {exc}", clear) from None
        except (FetchError, SessionStoreError) as exc:
            raise _Refused(Reason.LOGIN_FAILED, f"the code exchange failed: {exc}", clear) from None
        held = sum(1 for n in cookies.chunk_names(login.session.cookie) if n in jar)
        sent_cookies = (*clear, *self._jar.cookies(session, login, held))
        decision = Decision(False, Reason.LOGIN_COMPLETED, "", policy.id, "(callback)", who)
        return decision, BrowserStep(safe_return(pre.return_to), sent_cookies)

    def _redeem(
        self,
        code: str,
        pre: PreLogin,
        policy: CompiledPolicy,
        *,
        issuer: CompiledIssuer,
        metadata: ProviderMetadata,
    ) -> tuple[Session, Identity]:
        """The job behind a callback: redeem the code, check the ID token (and the access
        token, when it is the identity), make (and store) the session."""
        login = policy.login
        assert login is not None
        store = self._runtime.redis if login.session.store == "redis" else None
        if store is not None and not store.once(f"state:{_digest(pre.state)}", 3600.0):
            raise TokenError(Reason.LOGIN_STATE_INVALID, "this sign-in was completed already")
        tokens = redeem(
            metadata.token_endpoint,
            login.client,
            code=code,
            verifier=pre.verifier,
            redirect_uri=pre.redirect_uri,
            http=login.http,
        )
        if tokens.id_token is None:
            raise TokenError(Reason.LOGIN_FAILED, "no ID token: is openid among the scopes?")
        now = self._runtime.clock()
        verified = check_id_token(
            tokens.id_token,
            issuer,
            client_id=login.client.client_id,
            nonce=pre.nonce,
            access_token=tokens.access_token,
            now=now,
        )
        who = verified.identity
        if login.identity == "accessToken":
            try:
                who = verify(tokens.access_token, policy.issuers_by_iss, now).identity
            except TokenError as exc:
                raise TokenError(
                    Reason.LOGIN_FAILED,
                    f"the access token is not a JWT this policy accepts ({exc.reason})",
                ) from None
        session = self._jar.persist(session_from(tokens, login, now), login)
        return session, who

    # -- logout --------------------------------------------------------------------------------

    def _logout(
        self, request: RequestView, policy: CompiledPolicy, login: LoginSettings, *, may_wait: bool
    ) -> Handled:
        refused = cross_origin(request, login)
        if refused is not None:
            raise TokenError(Reason.CSRF_REJECTED, refused)
        asked = _one(_query(request), "return_to")
        if asked is not None and asked not in login.post_logout_uris:
            raise TokenError(Reason.REDIRECT_NOT_ALLOWED, "return_to is not an allowed address")
        return_to = asked or (login.post_logout_uris[0] if login.post_logout_uris else None)
        try:  # first: an event loop told to check again elsewhere has changed nothing yet
            metadata: ProviderMetadata | None = self._runtime.metadata(login, may_wait=may_wait)
        except TokenError:
            metadata = None  # signed out here; the provider's session stays
        sealed = cookies.read_chunked(
            cookies.parse(request.headers.get("cookie", "")), login.session.cookie
        )
        session = None
        if sealed is not None:
            try:
                session = self._jar.open(sealed, login, may_wait=may_wait).session
            except TokenError:
                session = None  # cleared all the same
        cleared = self._jar.end(session, login, held_parts(sealed) if sealed else 1)
        location = return_to or "/"
        if metadata is not None and session is not None:
            self._revoke(session, login, metadata)
        if metadata is not None and metadata.end_session_endpoint is not None:
            params = {"client_id": login.client.client_id}
            if session is not None and session.id_token is not None:
                params["id_token_hint"] = session.id_token
            if return_to is not None:
                params["post_logout_redirect_uri"] = return_to
            endpoint = metadata.end_session_endpoint
            location = endpoint + ("&" if "?" in endpoint else "?") + urllib.parse.urlencode(params)
        who = None
        if session is not None:
            sub = session.id_claims().get("sub")
            who = Identity(login.iss, sub if isinstance(sub, str) else None, {}, (), (), None)
        decision = Decision(False, Reason.LOGGED_OUT, "", policy.id, "(logout)", who)
        return decision, BrowserStep(location, cleared)

    def _revoke(self, session: Session, login: LoginSettings, metadata: ProviderMetadata) -> None:
        """Revoke the refresh token at the provider, best effort (nobody waits)."""
        endpoint, token = metadata.revocation_endpoint, session.refresh_token
        if endpoint is None or token is None:
            return
        self._runtime.jobs.spawn(
            lambda: revoke(endpoint, login.client, token, "refresh_token", login.http)
        )

    # -- failures ------------------------------------------------------------------------------

    def _failed(
        self,
        request: RequestView,
        policy: CompiledPolicy,
        exc: TokenError,
        rule: str,
        cleared: tuple[str, ...] = (),
    ) -> Handled:
        decision = Decision(False, exc.reason, exc.detail, policy.id, rule)
        more = exc.cookies if isinstance(exc, _Refused) else ()
        retry = _RETRY_SECONDS if exc.reason is Reason.PROVIDER_UNAVAILABLE else None
        page = is_navigation(request) or request.path in (
            policy.login.paths if policy.login else ()
        )
        return decision, BrowserStep(cookies=(*cleared, *more), retry_after=retry, page=page)


class _Refused(TokenError):
    """A failed callback that also clears its pre-login cookie."""

    def __init__(self, reason: Reason, detail: str, cookies: tuple[str, ...]) -> None:
        super().__init__(reason, detail)
        self.cookies = cookies
