"""Browser sign-in's redirects and its callback, against the scripted provider: what the
browser is told at each step, and every way a callback is refused."""

from __future__ import annotations

import json
import time
import urllib.parse

import pytest

from authz.request.decision import Reason
from authz.request.verify import WouldWait
from tests.unit.request.login.conftest import (
    CLIENT,
    FETCH,
    HOST,
    NAVIGATE,
    SESSION,
    Web,
    cookies_set,
    header,
    query_of,
    s256,
)


def test_a_page_load_without_a_session_is_sent_to_the_provider(web: Web) -> None:
    answer, outcome = web.get("/page?tab=2")
    assert (answer.status, outcome.decision.reason) == (302, Reason.LOGIN_REQUIRED)
    assert outcome.decision.detail == "token_missing"  # why sign-in was needed
    location = header(answer, "location")
    assert location.startswith(f"{web.op.issuer}/authorize?")
    params = query_of(location)
    assert params["response_type"] == "code" and params["client_id"] == CLIENT
    assert params["redirect_uri"] == f"https://{HOST}/oauth2/callback"
    assert params["scope"] == "openid offline_access"
    assert params["code_challenge_method"] == "S256"
    assert header(answer, "cache-control") == "no-store"
    assert "www-authenticate" not in dict(answer.headers)
    (cookie,) = cookies_set(answer)
    name = "authz-login-" + cookie.split("=", 1)[0].removeprefix("authz-login-")
    assert cookie.startswith(name + "=")
    assert cookie.endswith("; Path=/oauth2/callback; Max-Age=600; HttpOnly; Secure; SameSite=Lax")
    # The pre-login cookie binds state, nonce and the PKCE verifier to this browser.
    web.keep(answer)
    _, (state, nonce, verifier, return_to, redirect_uri, _expires, client) = web.pre_login()
    assert (state, nonce) == (params["state"], params["nonce"])
    assert s256(verifier) == params["code_challenge"]
    assert (return_to, redirect_uri, client) == ("/page?tab=2", params["redirect_uri"], CLIENT)
    # Discovered twice: the issuer's keys, and sign-in's endpoints (then kept).
    assert web.op.hits("/.well-known/openid-configuration") == 2
    web.get("/other")
    assert web.op.hits("/.well-known/openid-configuration") == 2


def test_every_sign_in_is_fresh(web: Web) -> None:
    first, second = web.start(), web.start()
    for name in ("state", "nonce", "code_challenge"):
        assert first[name] != second[name]
        assert len(first[name]) >= 32
    assert len([n for n in web.jar if n.startswith("authz-login-")]) == 2  # two tabs


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", "/page", FETCH),  # fetch() from a script
        ("GET", "/page", {"accept": "application/json"}),  # an API client
        ("GET", "/page", {"accept": "text/html", "x-requested-with": "XMLHttpRequest"}),
        ("GET", "/page", {**NAVIGATE, "sec-fetch-dest": "iframe"}),  # a frame
        ("POST", "/page", NAVIGATE),  # a form post cannot be replayed after sign-in
        ("GET", "/api/orders", NAVIGATE),  # a route with `login: false`
    ],
)
def test_scripts_and_apis_get_401(
    web: Web, method: str, path: str, headers: dict[str, str]
) -> None:
    answer, outcome = web.request(method, path, headers)
    assert (answer.status, outcome.decision.reason) == (401, Reason.TOKEN_MISSING)
    assert dict(answer.headers)["www-authenticate"] == 'Bearer realm="authz"'


def test_a_bad_bearer_token_on_a_page_load_is_not_sent_to_sign_in(web: Web) -> None:
    answer, outcome = web.get("/page", headers={**NAVIGATE, "authorization": "Bearer x.y.z"})
    assert answer.status == 401 and outcome.decision.reason == Reason.TOKEN_MALFORMED


def test_the_callback_sets_the_session_and_returns_to_the_page(web: Web) -> None:
    answer, outcome = web.sign_in("/page?tab=2")
    assert (answer.status, outcome.decision.reason) == (302, Reason.LOGIN_COMPLETED)
    assert header(answer, "location") == "/page?tab=2"
    assert outcome.decision.identity is not None and outcome.decision.identity.subject == "alice"
    sent = cookies_set(answer)
    assert any(c.startswith("authz-login-") and "Max-Age=0" in c for c in sent)  # used up
    session = next(c for c in sent if c.startswith(SESSION + "="))
    assert session.endswith("; HttpOnly; Secure; SameSite=Lax")
    assert "; Path=/;" in session and "Max-Age=86" in session  # the absolute timeout
    assert not any(n.startswith("authz-login-") for n in web.jar)

    answer, outcome = web.get("/page?tab=2", session=True)
    assert (answer.status, outcome.decision.reason) == (200, Reason.ALLOWED)
    assert dict(answer.headers)["x-auth-subject"] == "alice"
    assert dict(answer.headers)["x-auth-scopes"] == "openid offline_access"
    assert "cookie" in answer.remove  # the session cookie never reaches the upstream
    assert web.op.hits("/token") == 1


def test_a_replayed_callback_is_refused(web: Web) -> None:
    params = web.start()
    code = web.op.issue(
        client_id=CLIENT, sub="alice", nonce=params["nonce"], challenge=params["code_challenge"]
    )
    name, _ = web.pre_login()
    kept = web.jar[name]
    assert web.callback(code, params["state"])[0].status == 302
    web.jar[name] = kept  # an attacker who kept the pre-login cookie too
    answer, outcome = web.callback(code, params["state"])
    assert (answer.status, outcome.decision.reason) == (400, Reason.LOGIN_STATE_INVALID)
    assert "completed already" in outcome.decision.detail
    assert web.op.hits("/token") == 1  # the code was not sent again


def test_a_callback_without_its_pre_login_cookie_is_refused(web: Web) -> None:
    params = web.start()
    web.jar.clear()  # another browser, or the cookie expired
    answer, outcome = web.callback("code-x", params["state"])
    assert (answer.status, outcome.decision.reason) == (400, Reason.LOGIN_STATE_INVALID)
    assert answer.body.startswith("<!doctype html>")  # a person is looking: a page
    assert "The sign-in response is not valid" in answer.body


def test_a_tampered_state_or_cookie_is_refused(web: Web) -> None:
    params = web.start()
    name, fields = web.pre_login()
    for state, value in [
        (params["state"] + "x", web.jar[name]),  # another state: no cookie of its name
        (params["state"], web.jar[name][:-4] + "AAAA"),  # the cookie changed
        # a cookie sealed for one state, sent under the name of another
        (params["state"], web.ring.seal(json.dumps(["other", *fields[1:]]).encode(), b"pre-login")),
        # a session cookie is not a pre-login cookie (purpose-bound sealing)
        (params["state"], web.ring.seal(json.dumps(fields).encode(), b"session")),
    ]:
        web.jar[name] = value
        answer, outcome = web.callback("code-x", state)
        assert (answer.status, outcome.decision.reason) == (400, Reason.LOGIN_STATE_INVALID)
    assert web.op.hits("/token") == 0


def test_an_expired_sign_in_is_refused(web: Web) -> None:
    params = web.start()
    web.offset[0] = 601  # loginTimeoutSeconds is 600
    _answer, outcome = web.callback("code-x", params["state"])
    assert (
        outcome.decision.reason == Reason.LOGIN_STATE_INVALID
        and "expired" in outcome.decision.detail
    )


def test_the_provider_refusing_the_sign_in_is_shown(web: Web) -> None:
    params = web.start()
    query = urllib.parse.urlencode({"error": "access_denied", "state": params["state"]})
    answer, outcome = web.get(f"/oauth2/callback?{query}", session=True)
    assert (answer.status, outcome.decision.reason) == (401, Reason.LOGIN_FAILED)
    assert "access_denied" in outcome.decision.detail
    assert not any(n.startswith("authz-login-") for n in web.jar)  # cleared


def test_a_response_from_another_issuer_is_refused(web: Web) -> None:
    """RFC 9207: a callback that names another issuer (a mix-up attack) is refused."""
    params = web.start()
    query = urllib.parse.urlencode({"code": "c", "state": params["state"], "iss": "https://evil"})
    _answer, outcome = web.get(f"/oauth2/callback?{query}", session=True)
    assert outcome.decision.reason == Reason.LOGIN_FAILED and "issuer" in outcome.decision.detail


def test_a_code_the_provider_refuses_fails_the_sign_in(web: Web) -> None:
    params = web.start()
    answer, outcome = web.callback("code-never-issued", params["state"])
    assert (answer.status, outcome.decision.reason) == (401, Reason.LOGIN_FAILED)
    assert "invalid_grant" in outcome.decision.detail


@pytest.mark.parametrize(
    ("script", "found"),
    [
        ({"id_token_claims": {"aud": "someone-else"}}, "aud does not name this client"),
        ({"id_token_claims": {"aud": [CLIENT, "x"], "azp": "x"}}, "azp is another client"),
        ({"id_token_claims": {"nonce": "another"}}, "nonce is not the one"),
        ({"bad_at_hash": True}, "at_hash does not match"),
        ({"id_token_claims": {"iss": "https://evil.example"}}, "issuer_unknown"),
        ({"id_token_claims": {"exp": 1}}, "token_expired"),
        ({"id_token_claims": {"sub": ""}}, "sub missing"),
    ],
)
def test_an_id_token_that_fails_a_check_fails_the_sign_in(
    web: Web, script: dict[str, object], found: str
) -> None:
    for name, value in script.items():
        setattr(web.op, name, value)
    answer, outcome = web.sign_in()
    assert (answer.status, outcome.decision.reason) == (401, Reason.ID_TOKEN_INVALID)
    assert found in outcome.decision.detail
    assert SESSION not in web.jar


def test_no_id_token_fails_the_sign_in(web: Web) -> None:
    web.op.omit_id_token = True
    _answer, outcome = web.sign_in()
    assert outcome.decision.reason == Reason.LOGIN_FAILED and "openid" in outcome.decision.detail


def test_a_slow_provider_gets_a_retrying_page_and_one_exchange(web: Web) -> None:
    web.build(waitMillis=50)
    web.op.delay = 0.5
    params = web.start()
    code = web.op.issue(
        client_id=CLIENT, sub="alice", nonce=params["nonce"], challenge=params["code_challenge"]
    )
    answer, outcome = web.callback(code, params["state"])
    assert (answer.status, outcome.decision.reason) == (503, Reason.PROVIDER_UNAVAILABLE)
    assert header(answer, "retry-after") == "1"
    assert '<meta http-equiv="refresh" content="1">' in answer.body
    assert any(n.startswith("authz-login-") for n in web.jar)  # kept for the retry
    time.sleep(0.8)
    answer, outcome = web.callback(code, params["state"])  # the page's reload
    assert (answer.status, outcome.decision.reason) == (302, Reason.LOGIN_COMPLETED)
    assert web.op.hits("/token") == 1


def test_an_event_loop_is_told_to_check_again_elsewhere(web: Web) -> None:
    web.op.delay = 0.3
    params = web.start()
    code = web.op.issue(
        client_id=CLIENT, sub="alice", nonce=params["nonce"], challenge=params["code_challenge"]
    )
    with pytest.raises(WouldWait):
        web.callback(code, params["state"], may_wait=False)
    _answer, outcome = web.callback(code, params["state"])  # where waiting is cheap
    assert outcome.decision.reason == Reason.LOGIN_COMPLETED
    assert web.op.hits("/token") == 1


def test_an_unreachable_provider_gets_a_retrying_page(web: Web) -> None:
    web.op.close()
    answer, outcome = web.get("/page")
    assert (answer.status, outcome.decision.reason) == (503, Reason.PROVIDER_UNAVAILABLE)
    assert "discovery" in outcome.decision.detail and header(answer, "retry-after") == "1"


def test_the_login_path_returns_to_a_path_on_this_host_only(web: Web) -> None:
    answer, _ = web.get("/oauth2/login?return_to=%2Fafter%3Fx%3D1", session=True)
    assert answer.status == 302
    assert web.pre_login()[1][3] == "/after?x=1"
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example", "evil"):
        answer, outcome = web.get(f"/oauth2/login?return_to={urllib.parse.quote(target)}")
        assert (answer.status, outcome.decision.reason) == (400, Reason.REDIRECT_NOT_ALLOWED)


def test_a_page_path_that_could_leave_the_host_returns_to_the_root(web: Web) -> None:
    web.start("//evil.example/x")
    assert web.pre_login()[1][3] == "/"


def test_logout_ends_the_session_and_signs_out_at_the_provider(web: Web) -> None:
    web.sign_in()
    answer, outcome = web.get("/oauth2/logout", session=True)
    assert (answer.status, outcome.decision.reason) == (302, Reason.LOGGED_OUT)
    location = header(answer, "location")
    assert location.startswith(f"{web.op.issuer}/logout?")
    params = query_of(location)
    assert params["post_logout_redirect_uri"] == f"https://{HOST}/bye"
    assert params["client_id"] == CLIENT and params["id_token_hint"].count(".") == 2
    assert SESSION not in web.jar
    deadline = time.monotonic() + 5
    while web.op.hits("/revoke") == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert web.op.hits("/revoke") == 1  # the refresh token too, best effort

    answer, _ = web.get(f"/oauth2/logout?return_to={urllib.parse.quote(f'https://{HOST}/other')}")
    assert (
        query_of(header(answer, "location"))["post_logout_redirect_uri"] == f"https://{HOST}/other"
    )
    answer, outcome = web.get("/oauth2/logout?return_to=https%3A%2F%2Fevil.example%2F")
    assert (answer.status, outcome.decision.reason) == (400, Reason.REDIRECT_NOT_ALLOWED)


def test_logout_by_post_from_another_origin_is_refused(web: Web) -> None:
    web.sign_in()
    answer, outcome = web.request(
        "POST", "/oauth2/logout", {**NAVIGATE, "origin": "https://evil.example"}, session=True
    )
    assert (answer.status, outcome.decision.reason) == (403, Reason.CSRF_REJECTED)
    assert SESSION in web.jar
