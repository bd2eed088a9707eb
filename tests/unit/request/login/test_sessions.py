"""Sessions after sign-in: timeouts, key rotation, renewal with the refresh token, large
sessions, CSRF, and sessions that are not this policy's."""

from __future__ import annotations

import json
import secrets
import time

import pytest

from authz.request.decision import Reason
from authz.request.login.session import Session
from tests.unit.request.login.conftest import (
    FETCH,
    HOST,
    NAVIGATE,
    SESSION,
    Web,
    cookies_set,
    header,
)


def _session(web: Web) -> Session:
    sealed = "".join(v for k, v in sorted(web.jar.items()) if k.startswith(SESSION))
    opened = web.ring.open(sealed, b"session")
    assert opened is not None
    session = Session.from_bytes(opened.plaintext)
    assert session is not None
    return session


def test_a_session_ends_after_the_idle_timeout(web: Web) -> None:
    web.build(session={"keysFile": "session-keys", "idleTimeoutSeconds": 600})
    web.sign_in()
    web.offset[0] = 599
    assert web.get("/page", session=True)[0].status == 200  # a use: the idle clock restarts
    web.offset[0] = 599 + 599
    assert web.get("/page", session=True)[0].status == 200
    web.offset[0] = 599 + 599 + 601
    answer, outcome = web.get("/page", session=True)
    assert (answer.status, outcome.decision.reason) == (302, Reason.LOGIN_REQUIRED)
    assert outcome.decision.detail == "session_expired: idle timeout"
    assert SESSION not in web.jar  # cleared in the same answer


def test_a_session_ends_after_the_absolute_timeout_however_used(web: Web) -> None:
    web.build(
        session={
            "keysFile": "session-keys",
            "idleTimeoutSeconds": 1000,
            "absoluteTimeoutSeconds": 3000,
        }
    )
    web.op.expires_in = 100_000
    web.sign_in()
    for offset in (900, 1800, 2700):
        web.offset[0] = offset
        assert web.get("/page", session=True)[0].status == 200
    web.offset[0] = 3001
    answer, outcome = web.request("GET", "/page", FETCH, session=True)  # a script
    assert (answer.status, outcome.decision.reason) == (401, Reason.SESSION_EXPIRED)
    assert dict(answer.headers)["www-authenticate"].startswith(
        'Bearer realm="authz", error="invalid_token"'
    )
    assert any(c.startswith(SESSION + "=;") and "Max-Age=0" in c for c in cookies_set(answer))


def test_a_use_is_written_back_at_most_once_a_minute(web: Web) -> None:
    web.sign_in()
    answer, _ = web.get("/page", session=True)
    assert answer.response_headers == ()  # nothing to write: the answer can be shared
    web.offset[0] = 61
    answer, _ = web.get("/page", session=True)
    (renewed,) = [v for k, v in answer.response_headers if k == "set-cookie"]
    assert renewed.startswith(SESSION + "=")
    assert _session(web).seen == pytest.approx(time.time() + 61, abs=5)


def test_adding_a_key_keeps_sessions_and_dropping_it_ends_them(web: Web) -> None:
    web.sign_in()
    old = web.keys[0]
    web.keys.insert(0, secrets.token_bytes(32))  # rotation: a new key first
    web.build()
    answer, _ = web.get("/page", session=True)
    assert answer.status == 200  # still signed in
    assert any(k == "set-cookie" for k, _ in answer.response_headers)  # re-sealed, new key
    web.keys.remove(old)
    web.build()
    assert web.get("/page", session=True)[0].status == 200  # the re-sealed cookie opens

    web.keys[:] = [secrets.token_bytes(32)]  # every key replaced: sessions end
    web.build()
    answer, outcome = web.request("GET", "/page", FETCH, session=True)
    assert (answer.status, outcome.decision.reason) == (401, Reason.SESSION_INVALID)


def test_a_forged_session_cookie_is_refused(web: Web) -> None:
    web.sign_in()
    web.jar[SESSION] = web.jar[SESSION][:-8] + "AAAAAAAA"
    answer, outcome = web.request("GET", "/page", FETCH, session=True)
    assert (answer.status, outcome.decision.reason) == (401, Reason.SESSION_INVALID)
    answer, outcome = web.get("/page", headers={"cookie": f"{SESSION}=x; {SESSION}=y", **NAVIGATE})
    assert (answer.status, outcome.decision.reason) == (400, Reason.TOKEN_MULTIPLE)


def test_a_session_of_another_client_is_not_this_policys(web: Web) -> None:
    web.sign_in()
    other = json.loads(web.ring.open(web.jar[SESSION], b"session").plaintext)  # type: ignore[union-attr]
    other["c"] = "another-client"
    web.jar[SESSION] = web.ring.seal(json.dumps(other).encode(), b"session")
    answer, outcome = web.request("GET", "/page", FETCH, session=True)
    assert (answer.status, outcome.decision.reason) == (401, Reason.SESSION_INVALID)
    assert "another sign-in" in outcome.decision.detail


def test_tokens_near_expiry_are_renewed_and_the_answer_carries_them(web: Web) -> None:
    web.op.expires_in = 100
    web.sign_in()
    first = _session(web)
    web.offset[0] = 50  # refreshBeforeSeconds 60: due
    answer, outcome = web.get("/page", session=True)
    assert outcome.decision.reason == Reason.ALLOWED
    assert any(k == "set-cookie" for k, _ in answer.response_headers)
    renewed = _session(web)
    assert renewed.refresh_token != first.refresh_token
    assert renewed.created == first.created and renewed.expires > first.expires  # type: ignore[operator]
    assert web.op.hits("/token") == 2


def test_expired_tokens_wait_for_the_renewal(web: Web) -> None:
    web.op.expires_in = 100
    web.sign_in()
    web.offset[0] = 150
    answer, outcome = web.get("/page", session=True)
    assert (answer.status, outcome.decision.reason) == (200, Reason.ALLOWED)
    assert _session(web).expires > time.time() + 100  # type: ignore[operator]


def test_a_refused_refresh_ends_the_session(web: Web) -> None:
    web.op.expires_in = 100
    web.sign_in()
    web.op.state.revoked.add(_session(web).refresh_token or "")
    web.offset[0] = 150
    answer, outcome = web.get("/page", session=True)
    assert (answer.status, outcome.decision.reason) == (302, Reason.LOGIN_REQUIRED)
    assert outcome.decision.detail == "session_expired: refresh refused: invalid_grant"
    assert SESSION not in web.jar


def test_a_provider_that_is_down_only_matters_once_the_tokens_expired(web: Web) -> None:
    web.op.expires_in = 100
    web.sign_in()
    web.op.down = True
    web.offset[0] = 50  # due, still valid: the old tokens serve
    assert web.get("/page", session=True)[0].status == 200
    web.offset[0] = 150  # expired: nothing to serve with
    answer, outcome = web.get("/page", session=True)
    assert (answer.status, outcome.decision.reason) == (503, Reason.PROVIDER_UNAVAILABLE)
    assert header(answer, "retry-after") == "1"
    assert SESSION in web.jar  # not ended: the provider may come back
    web.op.down = False
    web.offset[0] = 151
    web.runtime.jobs.forget(("refresh", _refresh_key(web)))  # type: ignore[union-attr]
    assert web.get("/page", session=True)[0].status == 200


def _refresh_key(web: Web) -> str:
    from authz.request.login.renew import refresh_key

    return refresh_key(_session(web))


def test_without_a_refresh_token_the_session_lasts_as_long_as_the_tokens(web: Web) -> None:
    web.build(scopes=["openid"])
    web.op.expires_in = 100
    web.sign_in()
    web.op.state.refresh.clear()
    session = _session(web)
    web.jar[SESSION] = web.ring.seal(
        json.dumps({**json.loads(session.to_bytes()), "rt": None}).encode(), b"session"
    )
    web.offset[0] = 150
    _, outcome = web.get("/page", session=True)
    assert outcome.decision.detail == "session_expired: the session's tokens expired"


def test_a_large_session_continues_in_more_cookies(web: Web) -> None:
    web.op.id_token_claims["profile"] = "x" * 6000
    answer, _ = web.sign_in()
    parts = [c for c in cookies_set(answer) if c.startswith(SESSION)]
    names = [p.split("=", 1)[0] for p in parts]
    assert names == [SESSION, *(f"{SESSION}.{i}" for i in range(1, len(names)))]
    assert len(names) >= 3 and all(len(p) < 4000 for p in parts)
    assert web.get("/page", session=True)[0].status == 200
    # A smaller session later clears the part it no longer needs.
    web.op.id_token_claims.clear()
    web.sign_in("/oauth2/login?return_to=%2Fpage")  # signing in again, still holding those
    assert f"{SESSION}.1" not in web.jar
    assert web.get("/page", session=True)[0].status == 200


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"origin": f"https://{HOST}"}, Reason.ALLOWED),
        ({"origin": f"https://{HOST}:443"}, Reason.ALLOWED),
        ({"referer": f"https://{HOST}/form?x=1"}, Reason.ALLOWED),
        ({"origin": "https://evil.example"}, Reason.CSRF_REJECTED),
        ({"origin": f"http://{HOST}"}, Reason.CSRF_REJECTED),  # another scheme
        ({"origin": f"https://{HOST}:8443"}, Reason.CSRF_REJECTED),  # another port
        ({"origin": f"https://{HOST}.evil.example"}, Reason.CSRF_REJECTED),
        ({"origin": "null"}, Reason.CSRF_REJECTED),
        ({"referer": "https://evil.example/"}, Reason.CSRF_REJECTED),
        ({}, Reason.CSRF_REJECTED),  # neither: refused
        ({"origin": "https://partner.example"}, Reason.ALLOWED),  # trusted
    ],
)
def test_state_changing_requests_must_come_from_the_site(
    web: Web, headers: dict[str, str], reason: Reason
) -> None:
    web.build(csrf={"trustedOrigins": ["https://partner.example"]})
    web.sign_in()
    answer, outcome = web.request("POST", "/page", {**FETCH, **headers}, session=True)
    assert outcome.decision.reason == reason
    assert answer.status == (200 if reason == Reason.ALLOWED else 403)
    # A safe method is never refused, whatever its origin.
    answer, _ = web.request("GET", "/page", {**FETCH, **headers}, session=True)
    assert answer.status == 200


def test_a_public_port_is_part_of_the_origin(web: Web) -> None:
    web.build(publicPort=8443)
    params = web.start()
    assert params["redirect_uri"] == f"https://{HOST}:8443/oauth2/callback"
    web.sign_in()
    allowed = {"origin": f"https://{HOST}:8443"}
    assert web.request("POST", "/page", {**FETCH, **allowed}, session=True)[0].status == 200
    refused = {"origin": f"https://{HOST}"}
    assert web.request("POST", "/page", {**FETCH, **refused}, session=True)[0].status == 403


def test_the_check_can_be_turned_off(web: Web) -> None:
    web.build(csrf={"check": "off"})
    web.sign_in()
    answer, _ = web.request("POST", "/page", {"origin": "https://evil.example"}, session=True)
    assert answer.status == 200


def test_a_cross_site_form_post_gets_a_page(web: Web) -> None:
    web.sign_in()
    headers = {**NAVIGATE, "origin": "https://evil.example"}
    answer, outcome = web.request("POST", "/page", headers, session=True)
    assert (answer.status, outcome.decision.reason) == (403, Reason.CSRF_REJECTED)
    assert "Cross-origin request refused" in answer.body
