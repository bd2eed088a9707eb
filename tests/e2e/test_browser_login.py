"""Browser sign-in at the edge (issue 15), every part real: headless Chromium through Envoy
to the echo upstream, authz's `login` block signing the browser in at Ory Hydra with the
test login/consent app (tests.support.login_site).

What a person sees: the first visit goes through Hydra's login and consent and back, and
the page shows the identity the upstream received (screenshot: .screenshots/
login-signed-in.png); a reload rides the session; tokens that expire are renewed with the
refresh token, and a refresh the provider refuses ends the session; logout ends the
session at authz and at Hydra. What an attacker tries and is refused: a replayed or
tampered state, an ID token for another nonce, an external return URL, a cross-site POST;
and a script (fetch, XHR) gets 401, never a redirect to a login page it cannot show.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from authz.request.login.flow import PreLogin
from authz.request.login.session import Session
from tests.e2e.conftest import HydraFactory
from tests.support.browser import Browser, png_size
from tests.support.hydra import HydraServer
from tests.support.login_site import LoginSite, start_login_site
from tests.support.procs import free_port, http_request
from tests.support.redis import RedisServer

USER = "alice"
SESSION_COOKIE = "__Host-authz-session"


@pytest.fixture(scope="module")
def provider(hydra_server_module: HydraFactory) -> HydraServer:
    return hydra_server_module(login_app=True)


@pytest.fixture(scope="module")
def site(provider: HydraServer) -> Iterator[LoginSite]:
    with ExitStack() as stack:
        yield start_login_site(stack, provider)


def _sign_in(window: Browser, site: LoginSite, path: str = "/hello", user: str = USER) -> str:
    """From a protected page through Hydra's login form (when Hydra does not remember the
    user) back to the page; the page's text (the upstream's echo)."""
    window.driver.get(site.url(path))
    target = site.url(path)
    if not window.driver.current_url.startswith(target):
        window.wait_for("#username", timeout=15)
        window.driver.find_element(By.ID, "username").send_keys(user)
        window.driver.find_element(By.ID, "submit").click()
    window.wait_for_url(target, timeout=15)
    return _text(window)


def _text(window: Browser) -> str:
    return str(window.driver.find_element(By.TAG_NAME, "body").text)


def _echo(window: Browser) -> dict[str, Any]:
    """What the echo upstream says it received (its JSON, as the browser shows it)."""
    seen: dict[str, Any] = json.loads(_text(window))
    return seen


def _session_cookie(window: Browser) -> dict[str, Any] | None:
    return next((c for c in window.all_cookies() if c["name"] == SESSION_COOKIE), None)


def _session(window: Browser, site: LoginSite) -> Session:
    """The browser's session, opened with the site's key ring (as its operator could)."""
    cookie = _session_cookie(window)
    assert cookie is not None
    opened = site.keys.open(cookie["value"], b"session")
    assert opened is not None
    session = Session.from_bytes(opened.plaintext)
    assert session is not None
    return session


def _authz_log(site: LoginSite) -> list[dict[str, Any]]:
    assert site.authz.log_path is not None
    lines = site.authz.log_path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def _decisions(site: LoginSite, path: str) -> list[dict[str, Any]]:
    return [e for e in _authz_log(site) if e.get("event") == "decision" and e.get("path") == path]


def _last_decision(site: LoginSite, path: str, reason: str) -> dict[str, Any]:
    """The last decision logged for `path`, once it is `reason` (authz flushes its log
    every 200 ms)."""
    deadline = time.monotonic() + 5
    while True:
        found = _decisions(site, path)
        if (found and found[-1]["reason"] == reason) or time.monotonic() > deadline:
            assert found, f"no decision logged for {path}"
            assert found[-1]["reason"] == reason, found[-1]
            return found[-1]
        time.sleep(0.1)


def _logged(site: LoginSite, path: str, reason: str, detail: str) -> dict[str, Any]:
    """A decision logged for `path` with `reason` and `detail` in its detail, once it is
    flushed."""
    deadline = time.monotonic() + 5
    while True:
        found = [
            e
            for e in _decisions(site, path)
            if e["reason"] == reason and detail in e.get("detail", "")
        ]
        if found or time.monotonic() > deadline:
            assert found, _decisions(site, path)
            return found[-1]
        time.sleep(0.1)


def test_first_visit_signs_in_and_the_page_shows_the_identity(
    site: LoginSite, browser: Callable[..., Browser]
) -> None:
    window = browser(network_log=True)
    window.driver.get(site.url("/hello?tab=1"))
    window.wait_for("#username", timeout=15)  # Hydra sent the browser to the login app
    assert "Test login" in window.driver.title
    window.screenshot("login-provider-form")
    authorize = next(u for u in window.requested_urls() if "/oauth2/auth?" in u)
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(authorize).query))
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["redirect_uri"] == site.callback
    assert query["scope"] == "openid offline_access email"
    assert query["client_id"] == site.client.client_id
    assert len(query["state"]) >= 32 and len(query["nonce"]) >= 32
    window.driver.find_element(By.ID, "username").send_keys(USER)
    window.driver.find_element(By.ID, "submit").click()

    window.wait_for_url(site.url("/hello?tab=1"), timeout=15)  # back where the user started
    seen = _echo(window)
    assert seen["path"] == "/hello?tab=1"
    headers = seen["headers"]
    assert headers["x-auth-subject"] == USER
    assert headers["x-auth-email"] == f"{USER}@example.test"
    assert headers["x-auth-scopes"] == "openid offline_access email"
    assert SESSION_COOKIE not in headers.get("cookie", "")  # stripped before the upstream
    shot = window.screenshot("login-signed-in")
    assert png_size(shot.read_bytes())[0] == window.width
    assert site.provider.app is not None
    assert site.provider.app.events[-2:] == [("login", USER), ("consent", USER)]

    cookie = _session_cookie(window)
    assert cookie is not None
    assert (cookie["httpOnly"], cookie["secure"], cookie["sameSite"]) == (True, True, "Lax")
    assert cookie["path"] == "/" and cookie["domain"] == "127.0.0.1"
    assert not any(c["name"].startswith("authz-login-") for c in window.all_cookies())
    assert _session(window, site).id_claims()["sub"] == USER

    # A reload rides the session: no trip to Hydra, the same identity upstream.
    before = len(window.requested_urls())
    window.driver.refresh()
    assert _echo(window)["headers"]["x-auth-subject"] == USER
    assert not any(site.provider.hydra.public in u for u in window.requested_urls()[before:])
    assert site.provider.app.events[-1] == ("consent", USER)  # nothing new at the provider


def test_scripts_get_401_not_a_redirect(site: LoginSite, browser: Callable[..., Browser]) -> None:
    window = browser()
    window.driver.get(site.url("/public/page"))  # an anonymous page of the same site
    assert window.fetch_status("/hello") == 401
    assert window.fetch_status("/hello", xhr=True) == 401
    window.driver.get(site.url("/api/orders"))  # a navigation, but `login: false`: an API
    assert "a bearer token is required" in _text(window)

    raw = http_request(site.base_url, "GET", "/hello", {"accept": "application/json"})
    assert raw.status == 401 and raw.headers["www-authenticate"] == 'Bearer realm="authz"'
    page = http_request(site.base_url, "GET", "/hello", {"accept": "text/html"})
    assert page.status == 302 and page.headers["location"].startswith(site.provider.hydra.public)

    _sign_in(window, site)
    window.driver.get(site.url("/public/page"))
    assert window.fetch_status("/hello") == 200  # the same script, signed in
    assert window.fetch_status("/api/orders", xhr=True) == 200


def test_logout_ends_the_session_here_and_at_the_provider(
    site: LoginSite, browser: Callable[..., Browser]
) -> None:
    window = browser()
    _sign_in(window, site)
    window.driver.get(site.url("/oauth2/logout"))
    window.wait_for_url(site.signed_out, timeout=15)  # via Hydra's end_session_endpoint
    assert site.provider.app is not None
    assert site.provider.app.events[-1] == ("logout", USER)
    assert _session_cookie(window) is None  # gone from the browser
    assert "x-auth-subject" not in _echo(window)["headers"]
    window.driver.get(site.url("/hello"))
    window.wait_for("#username", timeout=15)  # Hydra asks again: its session ended too
    _last_decision(site, "/oauth2/logout", "logged_out")


def test_a_replayed_callback_is_refused(site: LoginSite, browser: Callable[..., Browser]) -> None:
    window = browser(network_log=True)
    _sign_in(window, site)
    callback = next(u for u in window.requested_urls() if u.startswith(site.callback + "?"))
    window.driver.get(callback)  # the same code and state again
    assert "The sign-in response is not valid" in _text(window)
    _last_decision(site, "/oauth2/callback", "login_state_invalid")
    window.driver.get(site.url("/hello"))
    assert _echo(window)["headers"]["x-auth-subject"] == USER  # the session is unharmed


def test_a_tampered_state_is_refused(site: LoginSite, browser: Callable[..., Browser]) -> None:
    window = browser(network_log=True)
    window.driver.get(site.url("/hello"))
    window.wait_for("#username", timeout=15)
    authorize = next(u for u in window.requested_urls() if "/oauth2/auth?" in u)
    parts = urllib.parse.urlsplit(authorize)
    query = dict(urllib.parse.parse_qsl(parts.query))
    state = query["state"]
    query["state"] = state[:-4] + ("AAAA" if not state.endswith("AAAA") else "BBBB")
    window.driver.get(parts._replace(query=urllib.parse.urlencode(query)).geturl())
    window.wait_for("#username", timeout=15)
    window.driver.find_element(By.ID, "username").send_keys(USER)
    window.driver.find_element(By.ID, "submit").click()
    window.wait_for_url(site.callback, timeout=15)
    assert "The sign-in response is not valid" in _text(window)
    _last_decision(site, "/oauth2/callback", "login_state_invalid")
    assert _session_cookie(window) is None

    # A pre-login cookie that was changed does not open either (a new browser: Hydra
    # remembers the first one's user and would not stop at its login form).
    window = browser()
    window.driver.get(site.url("/hello"))
    window.wait_for("#username", timeout=15)
    pre = next(c for c in window.all_cookies() if c["name"].startswith("authz-login-"))
    flipped = pre["value"][:-6] + ("A" if pre["value"][-6] != "A" else "B") + pre["value"][-5:]
    window.put_cookie({**_settable(pre), "value": flipped})
    window.driver.find_element(By.ID, "username").send_keys(USER)
    window.driver.find_element(By.ID, "submit").click()
    window.wait_for_url(site.callback, timeout=15)
    assert "The sign-in response is not valid" in _text(window)
    assert _session_cookie(window) is None


def test_an_id_token_for_another_nonce_is_refused(
    site: LoginSite, browser: Callable[..., Browser]
) -> None:
    """The pre-login cookie is re-sealed (with the site's keys) naming another nonce: the
    ID token Hydra issues for this sign-in no longer matches what the browser was sent
    with, as when a code and state from another sign-in are injected."""
    window = browser()
    window.driver.get(site.url("/hello"))
    window.wait_for("#username", timeout=15)
    cookie = next(c for c in window.all_cookies() if c["name"].startswith("authz-login-"))
    opened = site.keys.open(cookie["value"], b"pre-login")
    assert opened is not None
    fields = json.loads(opened.plaintext)
    pre = PreLogin(*fields[:5], float(fields[5]), fields[6])
    other = replace(pre, nonce=pre.nonce[::-1])
    resealed = site.keys.seal(
        json.dumps(
            [other.state, other.nonce, other.verifier, other.return_to, other.redirect_uri,
             other.expires, other.client_id]
        ).encode(),
        b"pre-login",
    )  # fmt: skip
    window.put_cookie({**_settable(cookie), "value": resealed})
    window.driver.find_element(By.ID, "username").send_keys(USER)
    window.driver.find_element(By.ID, "submit").click()
    window.wait_for_url(site.callback, timeout=15)
    assert "The sign-in failed" in _text(window)
    assert "nonce" in _last_decision(site, "/oauth2/callback", "id_token_invalid")["detail"]
    assert _session_cookie(window) is None


def test_external_return_urls_are_refused(site: LoginSite, browser: Callable[..., Browser]) -> None:
    window = browser()
    evil = urllib.parse.quote("https://evil.example/", safe="")
    window.driver.get(site.url(f"/oauth2/login?return_to={evil}"))
    assert "The return address is not allowed" in _text(window)
    window.driver.get(site.url(f"/oauth2/logout?return_to={evil}"))
    assert "The return address is not allowed" in _text(window)
    window.driver.get(site.url("/oauth2/login?return_to=%2F%2Fevil.example%2F"))
    assert "The return address is not allowed" in _text(window)
    _last_decision(site, "/oauth2/login", "redirect_not_allowed")
    # A same-host path is fine: sign in, and land there.
    window.driver.get(site.url("/oauth2/login?return_to=%2Fafter%3Fx%3D1"))
    window.wait_for("#username", timeout=15)
    window.driver.find_element(By.ID, "username").send_keys(USER)
    window.driver.find_element(By.ID, "submit").click()
    window.wait_for_url(site.url("/after?x=1"), timeout=15)
    assert _echo(window)["headers"]["x-auth-subject"] == USER


class _Attacker(BaseHTTPRequestHandler):
    """Another origin (same site: 127.0.0.1 on another port) with a form that posts to
    the app as soon as it loads."""

    target = ""

    def do_GET(self) -> None:
        body = (
            "<!doctype html><title>win a prize</title>"
            f"<form id=f method=post action='{self.target}'>"
            "<input name=amount value=1000></form>"
            "<script>document.getElementById('f').submit()</script>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


def test_a_cross_site_post_is_refused(site: LoginSite, browser: Callable[..., Browser]) -> None:
    window = browser()
    _sign_in(window, site)
    handler = type("Attacker", (_Attacker,), {"target": site.url("/transfer")})
    attacker = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=attacker.serve_forever, daemon=True).start()
    try:
        window.driver.get(f"http://127.0.0.1:{attacker.server_address[1]}/")
        window.wait_for_url(site.url("/transfer"), timeout=15)
        assert "Cross-origin request refused" in _text(window)
    finally:
        attacker.shutdown()
        attacker.server_close()
    _last_decision(site, "/transfer", "csrf_rejected")
    # The app's own pages may post: same origin.
    window.driver.get(site.url("/hello"))
    assert window.fetch_status("/transfer", method="POST") == 200


def test_expired_tokens_are_renewed_with_the_refresh_token(
    site: LoginSite, browser: Callable[..., Browser]
) -> None:
    """Hydra issues this client 5-second tokens (the site renews 2 s before expiry): past
    that the next page waits for the refresh (a new ID token: a later exp upstream) and
    the browser gets the renewed session. A refresh token Hydra refuses (revoked here)
    ends the session."""
    hydra = site.provider.hydra
    lifespans = {
        "authorization_code_grant_access_token_lifespan": "5s",
        "authorization_code_grant_id_token_lifespan": "5s",
        "refresh_token_grant_access_token_lifespan": "5s",
        "refresh_token_grant_id_token_lifespan": "5s",
    }
    url = f"{hydra.admin}/admin/clients/{site.client.client_id}/lifespans"
    hydra.call("PUT", url, json.dumps(lifespans).encode(), {"Content-Type": "application/json"})
    try:
        window = browser()
        _sign_in(window, site, "/renewing")
        first = _session(window, site)
        expires = _echo(window)["headers"]["x-auth-expires"]
        assert first.expires is not None and first.refresh_token is not None
        _sleep_past(first.expires)
        window.driver.get(site.url("/renewing"))
        renewed = _session(window, site)
        assert _echo(window)["headers"]["x-auth-subject"] == USER
        assert int(_echo(window)["headers"]["x-auth-expires"]) > int(expires)
        assert renewed.refresh_token != first.refresh_token  # Hydra rotates it
        assert renewed.created == first.created  # the same sign-in
        assert hydra.introspect(first.access_token) == {"active": False}

        current = _session(window, site)  # (the favicon's request may have renewed it)
        hydra.revoke(site.client, current.refresh_token or "")
        assert current.expires is not None
        _sleep_past(current.expires)
        window.driver.get(site.url("/renewing"))  # the session ended: a new sign-in
        window.wait_for_url(site.url("/renewing"), timeout=15)  # (Hydra remembers alice)
        ended = _logged(site, "/renewing", "login_required", "refresh refused: invalid_grant")
        assert ended["detail"] == "session_expired: refresh refused: invalid_grant"
        assert _session(window, site).created > current.created
    finally:
        hydra.call("PUT", url, b"{}", {"Content-Type": "application/json"})


def _sleep_past(when: float) -> None:
    time.sleep(max(0.0, when - time.time()) + 1.0)


def _settable(cookie: dict[str, Any]) -> dict[str, Any]:
    """A cookie as DevTools reports it, in the form Network.setCookie takes."""
    keys = ("name", "value", "domain", "path", "secure", "httpOnly", "sameSite")
    out = {k: cookie[k] for k in keys if k in cookie}
    out["url"] = f"http://{cookie['domain']}{cookie['path']}"
    return out


# -- over HTTP checks --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def http_site(provider: HydraServer) -> Iterator[LoginSite]:
    """The same app, Envoy asking authz over HTTP (http_service, proxy-config
    --browser-login: the cookie and Fetch Metadata go to authz, Set-Cookie comes back)."""
    with ExitStack() as stack:
        yield start_login_site(stack, provider, transport="http")


def test_sign_in_renewal_and_logout_over_http_checks(
    http_site: LoginSite, browser: Callable[..., Browser]
) -> None:
    site, hydra = http_site, http_site.provider.hydra
    url = f"{hydra.admin}/admin/clients/{site.client.client_id}/lifespans"
    short = {
        name: "5s"
        for name in (
            "authorization_code_grant_access_token_lifespan",
            "authorization_code_grant_id_token_lifespan",
            "refresh_token_grant_access_token_lifespan",
            "refresh_token_grant_id_token_lifespan",
        )
    }
    hydra.call("PUT", url, json.dumps(short).encode(), {"Content-Type": "application/json"})
    window = browser()
    _sign_in(window, site)
    assert _echo(window)["headers"]["x-auth-subject"] == USER
    assert window.fetch_status("/hello") == 200
    first = _session(window, site)
    assert first.expires is not None
    _sleep_past(first.expires)
    window.driver.get(site.url("/hello"))  # renewed: the new cookie reaches the browser
    assert _echo(window)["headers"]["x-auth-subject"] == USER
    assert _session(window, site).refresh_token != first.refresh_token
    window.driver.get(site.url("/public/page"))
    window.driver.get(site.url("/oauth2/logout"))
    window.wait_for_url(site.signed_out, timeout=15)
    assert _session_cookie(window) is None
    assert window.fetch_status("/hello") == 401
    hydra.call("PUT", url, b"{}", {"Content-Type": "application/json"})


# -- sessions in Redis ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_site(provider: HydraServer) -> Iterator[tuple[LoginSite, RedisServer]]:
    """Two authz replicas behind one Envoy (round-robin), sessions in one real Redis."""
    with ExitStack() as stack:
        redis = stack.enter_context(RedisServer())
        site = start_login_site(
            stack,
            provider,
            login={"session": {"keysFile": "session-keys", "store": "redis"}},
            authz_args=["--session-redis", redis.url],
            replicas=2,
        )
        yield site, redis


def _replica_allowed(site: LoginSite) -> list[int]:
    """How many requests each replica allowed (from its audit log)."""
    counts = []
    for replica in site.replicas:
        assert replica.log_path is not None
        lines = replica.log_path.read_text().splitlines()
        counts.append(sum(1 for x in lines if '"event":"decision"' in x and '"allowed"' in x))
    return counts


_PARALLEL = (
    "const [path, n, done] = arguments;"
    "Promise.all(Array.from({length: n}, () => fetch(path).then(r => r.status, () => -1)))"
    ".then(done);"
)


def test_replicas_share_redis_sessions_and_renew_them_once(
    redis_site: tuple[LoginSite, RedisServer], browser: Callable[..., Browser]
) -> None:
    """A session made by one replica is good at the other; when its tokens expire, pages
    and parallel requests at both replicas renew it once (a rotating refresh token spent
    twice would be refused, and the session would end); logout at one ends it at both."""
    site, redis = redis_site
    hydra = site.provider.hydra
    url = f"{hydra.admin}/admin/clients/{site.client.client_id}/lifespans"
    short = {
        name: "5s"
        for name in (
            "authorization_code_grant_access_token_lifespan",
            "authorization_code_grant_id_token_lifespan",
            "refresh_token_grant_access_token_lifespan",
            "refresh_token_grant_id_token_lifespan",
        )
    }
    hydra.call("PUT", url, json.dumps(short).encode(), {"Content-Type": "application/json"})
    try:
        window = browser()
        _sign_in(window, site, "/shared")
        for _ in range(4):
            window.driver.get(site.url("/shared"))
            assert _echo(window)["headers"]["x-auth-subject"] == USER
        deadline = time.monotonic() + 5  # (each replica flushes its log every 200 ms)
        while not all(_replica_allowed(site)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(_replica_allowed(site))  # both replicas let the session through
        (key,) = redis.client().keys("authz:session:*")
        cookie = _session_cookie(window)
        assert cookie is not None and len(cookie["value"]) < 200  # a sealed id only
        assert "ory_" not in (redis.client(decode_responses=False).get(key) or b"").decode(
            "ascii", "replace"
        )  # the record is sealed too: no token in Redis in the clear

        time.sleep(6)  # the tokens expired
        statuses = window.driver.execute_async_script(_PARALLEL, "/api/shared", 8)
        assert statuses == [200] * 8
        window.driver.get(site.url("/shared"))
        assert _echo(window)["headers"]["x-auth-subject"] == USER
        for replica in site.replicas:
            assert replica.log_path is not None
            assert "refresh refused" not in replica.log_path.read_text()
    finally:
        hydra.call("PUT", url, b"{}", {"Content-Type": "application/json"})

    copied = f"{SESSION_COOKIE}={cookie['value']}"
    window.driver.get(site.url("/oauth2/logout"))
    window.wait_for_url(site.signed_out, timeout=15)
    for _ in range(4):  # both replicas
        replay = http_request(site.base_url, "GET", "/api/x", {"cookie": copied})
        assert replay.status == 401  # the copy names a session that no longer exists
        assert "session has ended" in replay.body.decode()
    assert redis.client().keys("authz:session:*") == []
