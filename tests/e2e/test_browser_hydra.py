"""A real browser signs in at a real provider: headless Chromium, Ory Hydra, the login app.

The authorization code flow with PKCE (S256), ``state`` and ``nonce``, as issue 15's login
will drive it: the browser follows Hydra to the login app's form, signs in as alice, is
sent through consent back to the client's redirect URI with a code; the code is exchanged
with its verifier, the ID token is verified with Hydra's published keys, the refresh
token renews the tokens, and RP-initiated logout ends the session at Hydra. Screenshots of
the login form and the signed-in callback page are written to .screenshots/.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from selenium.webdriver.common.by import By

from tests.e2e.conftest import HydraFactory
from tests.support.browser import Browser, png_size
from tests.support.hydra import HydraError, HydraServer, OAuthClient, Pkce

SCOPE = "openid offline_access email"
USER = "alice"


@pytest.fixture(scope="module")
def provider(hydra_server_module: HydraFactory) -> HydraServer:
    return hydra_server_module(login_app=True)


def _app_urls(provider: HydraServer) -> tuple[str, str]:
    assert provider.app is not None
    return f"{provider.app.url}/callback", f"{provider.app.url}/logged-out"


def _web_client(provider: HydraServer) -> OAuthClient:
    callback, logged_out = _app_urls(provider)
    return provider.hydra.auth_code_client(
        redirect_uris=[callback], post_logout_redirect_uris=[logged_out], scope=SCOPE
    )


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).items()}


@dataclass(frozen=True)
class SignIn:
    """What the client holds after the browser came back to its redirect URI."""

    query: dict[str, str]  # code, scope, state
    pkce: Pkce
    state: str
    nonce: str


def _sign_in(
    window: Browser, provider: HydraServer, client: OAuthClient, login_screenshot: str = ""
) -> SignIn:
    """Drive the browser from the authorization request through the login form (skipped
    when Hydra remembers the login) to the redirect URI."""
    callback, _ = _app_urls(provider)
    pkce, state, nonce = Pkce.new(), secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    window.driver.get(
        provider.hydra.authorization_url(
            client, redirect_uri=callback, scope=SCOPE, state=state, nonce=nonce, pkce=pkce
        )
    )
    if not window.driver.current_url.startswith(callback):
        window.wait_for("#username")
        assert "Test login" in window.driver.title
        if login_screenshot:
            window.screenshot(login_screenshot)
        window.driver.find_element(By.ID, "username").send_keys(USER)
        window.driver.find_element(By.ID, "submit").click()
    query = _query(window.wait_for_url(callback))
    assert query["state"] == state  # the client's CSRF binding came back unchanged
    return SignIn(query, pkce, state, nonce)


def _at_hash(access_token: str) -> str:
    digest = hashlib.sha256(access_token.encode()).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()


def _verify_id_token(provider: HydraServer, client: OAuthClient, tokens: dict[str, Any]) -> Any:
    discovery = provider.hydra.discovery()
    keys = jwt.PyJWKClient(discovery["jwks_uri"], cache_keys=False)
    id_token = tokens["id_token"]
    return jwt.decode(
        id_token,
        keys.get_signing_key_from_jwt(id_token).key,
        algorithms=["RS256"],
        audience=client.client_id,
        issuer=discovery["issuer"],
    )


def test_authorization_code_flow_with_pkce_refresh_and_logout(
    provider: HydraServer, browser: Callable[..., Browser]
) -> None:
    hydra, client = provider.hydra, _web_client(provider)
    callback, logged_out = _app_urls(provider)
    window = browser()

    # Sign in: the login form (screenshot), consent, then the redirect URI with a code.
    signed_in = _sign_in(window, provider, client, login_screenshot="hydra-login")
    assert signed_in.query["code"].startswith("ory_ac_")
    assert signed_in.query["scope"] == SCOPE
    assert window.driver.find_element(By.ID, "state").text == signed_in.state
    assert signed_in.query["code"] not in window.driver.page_source  # shown masked
    shot = window.screenshot("hydra-signed-in")
    assert png_size(shot.read_bytes())[0] == window.width
    assert provider.app is not None
    assert provider.app.events[-2:] == [("login", USER), ("consent", USER)]
    assert any(c["name"] == "ory_hydra_session_dev" for c in window.driver.get_cookies())

    # The code, with its verifier, buys tokens; the ID token is Hydra's and for this login.
    tokens = hydra.exchange_code(
        client,
        code=signed_in.query["code"],
        redirect_uri=callback,
        verifier=signed_in.pkce.verifier,
    )
    assert tokens["access_token"].startswith("ory_at_")
    assert tokens["refresh_token"].startswith("ory_rt_")
    claims = _verify_id_token(provider, client, tokens)
    assert (claims["sub"], claims["nonce"]) == (USER, signed_in.nonce)
    assert claims["email"] == f"{USER}@example.test"
    assert claims["at_hash"] == _at_hash(tokens["access_token"])
    seen = hydra.introspect(tokens["access_token"])
    assert (seen["active"], seen["sub"], seen["client_id"]) == (True, USER, client.client_id)
    assert seen["ext"] == {"roles": ["tester"]}

    # Refresh rotates both tokens and retires the old access token at once.
    renewed = hydra.refresh(client, tokens["refresh_token"])
    assert renewed["refresh_token"] != tokens["refresh_token"]
    assert hydra.introspect(tokens["access_token"]) == {"active": False}
    assert hydra.introspect(renewed["access_token"])["active"] is True
    assert _verify_id_token(provider, client, renewed)["sub"] == USER

    # RP-initiated logout ends Hydra's login session (not the tokens: that is revocation).
    window.driver.get(
        hydra.end_session_url(
            id_token=renewed["id_token"], post_logout_redirect_uri=logged_out, state="bye"
        )
    )
    assert _query(window.wait_for_url(logged_out)) == {"state": "bye"}
    assert provider.app.events[-1] == ("logout", USER)
    assert hydra.introspect(renewed["access_token"])["active"] is True
    window.driver.get(
        hydra.authorization_url(
            client,
            redirect_uri=callback,
            scope=SCOPE,
            state=signed_in.state,
            nonce=signed_in.nonce,
            pkce=Pkce.new(),
        )
    )
    window.wait_for("#username")  # signed out: the login form again, no silent sign-in


def test_a_wrong_pkce_verifier_burns_the_code(
    provider: HydraServer, browser: Callable[..., Browser]
) -> None:
    client = _web_client(provider)
    callback, _ = _app_urls(provider)
    signed_in = _sign_in(browser(), provider, client)
    code = signed_in.query["code"]
    with pytest.raises(HydraError) as wrong:
        provider.hydra.exchange_code(
            client, code=code, redirect_uri=callback, verifier=Pkce.new().verifier
        )
    assert wrong.value.status == 400 and wrong.value.body["error"] == "invalid_grant"
    assert "PKCE" in wrong.value.body["error_description"]
    with pytest.raises(HydraError) as after:  # the right verifier is too late now
        provider.hydra.exchange_code(
            client, code=code, redirect_uri=callback, verifier=signed_in.pkce.verifier
        )
    assert after.value.status == 400 and after.value.body["error"] == "invalid_grant"
