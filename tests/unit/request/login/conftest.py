"""A web app's policy with `login`, served in memory, against the scripted provider
(tests.support.oidc_provider: the faults Hydra never produces). The clock is real time
plus an offset a test moves, so provider tokens verify and sessions can be aged.

    def test_x(web: Web) -> None:
        answer, _ = web.get("/page")                     # a navigation: 302 to the provider
        answer, _ = web.sign_in()                        # through the callback: 302 back
        answer, _ = web.get("/page", session=True)       # with the session cookie: allowed
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from authz.keys.remote import KeyManager
from authz.oidc.jobs import Jobs
from authz.oidc.seal import KeyRing
from authz.request.assembly import pipeline
from authz.request.cache import TokenCache
from authz.request.login.runtime import LoginRuntime
from authz.request.pipeline import Outcome, Pipeline
from authz.request.respond import Answer
from authz.request.view import KnownConnection, request_view
from tests.support.docs import issuer, policy, rule, write
from tests.support.oidc_provider import ScriptedProvider
from tests.support.snapshots import Served, serve

HOST = "app.example"
CLIENT = "web"
SECRET = "s3cret"
SESSION = "__Host-authz-session"
NAVIGATE = {"sec-fetch-mode": "navigate", "sec-fetch-dest": "document", "accept": "text/html"}
FETCH = {"sec-fetch-mode": "cors", "sec-fetch-dest": "empty", "accept": "*/*"}


def ring_text(*keys: bytes) -> str:
    return "".join(base64.b64encode(k).decode() + "\n" for k in keys)


@dataclass
class Web:
    op: ScriptedProvider
    dir: Path
    keys: list[bytes]
    login: dict[str, Any]
    offset: list[float] = field(default_factory=lambda: [0.0])
    jar: dict[str, str] = field(default_factory=dict)  # the browser's cookies (name -> value)
    served: Served | None = None
    runtime: LoginRuntime | None = None
    checker: Pipeline | None = None
    keys_manager: KeyManager = field(default_factory=KeyManager)

    def now(self) -> float:
        return time.time() + self.offset[0]

    @property
    def ring(self) -> KeyRing:
        return KeyRing.parse(ring_text(*self.keys))

    def build(self, **login: Any) -> None:
        """(Re)build the policy; the server's runtime (jobs, used states) is kept."""
        self.login.update(login)
        (self.dir / "session-keys").write_text(ring_text(*self.keys))
        docs = [
            issuer(
                "op",
                self.op.issuer,
                discovery=True,
                fetch={"allowInsecureHttp": True},
                audiences=[],
            ),
            policy(
                "web",
                hosts=[HOST],
                issuers=["op"],
                login=self.login,
                rules=[
                    rule("public", paths=["/public/**"], action="allowAnonymous"),
                    rule("api", paths=["/api/**"], login=False),
                    rule("app", paths=["/**"]),
                ],
                response={
                    "headers": [
                        {"name": "x-auth-subject", "claim": "sub"},
                        {"name": "x-auth-scopes", "claim": "$scopes"},
                    ],
                    "stripAuthorization": True,
                },
            ),
        ]
        write(self.dir / "policy.yaml", *docs)
        self.served = serve(*docs, origin=str(self.dir / "policy.yaml"), keys=self.keys_manager)
        assert self.keys_manager.wait_attempted(10)
        assert not any(s.problems for s in self.served.statuses.values()), self.served.statuses
        if self.runtime is None:
            self.runtime = LoginRuntime(jobs=Jobs(workers=2), clock=self.now)
        self.checker = pipeline(self.served, TokenCache(0), clock=self.now, login=self.runtime)

    def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        *,
        session: bool = False,
        may_wait: bool = True,
        host: str = HOST,
    ) -> tuple[Answer, Outcome]:
        """One Check as the proxy would send it (https); `session` sends the jar's cookies
        and stores the answer's Set-Cookie in it, as a browser would."""
        sent = {k.lower(): v for k, v in (headers or {}).items()}
        if session and self.jar:
            sent["cookie"] = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        view = request_view(
            method, host, path, sent, {}, connection=KnownConnection(scheme="https")
        )
        assert self.checker is not None
        answer, outcome = self.checker.check(view, may_wait=may_wait)
        if session:
            self.keep(answer)
        return answer, outcome

    def get(self, path: str, **kwargs: Any) -> tuple[Answer, Outcome]:
        headers = kwargs.pop("headers", NAVIGATE)
        return self.request("GET", path, headers, **kwargs)

    def keep(self, answer: Answer) -> None:
        for name, value in (*answer.headers, *answer.response_headers):
            if name != "set-cookie":
                continue
            pair, _, attributes = value.partition(";")
            cookie, _, content = pair.partition("=")
            if "Max-Age=0" in attributes:
                self.jar.pop(cookie, None)
            else:
                self.jar[cookie] = content

    def start(self, path: str = "/page") -> dict[str, str]:
        """Begin sign-in at `path`; the authorization request's parameters."""
        answer, _ = self.get(path, session=True)
        assert answer.status == 302, answer
        return query_of(header(answer, "location"))

    def sign_in(self, path: str = "/page", sub: str = "alice") -> tuple[Answer, Outcome]:
        """The whole flow: start, the provider's code, the callback (cookies kept)."""
        params = self.start(path)
        code = self.op.issue(
            client_id=CLIENT,
            sub=sub,
            nonce=params["nonce"],
            challenge=params["code_challenge"],
            redirect_uri=params["redirect_uri"],
        )
        return self.callback(code, params["state"])

    def callback(self, code: str, state: str, **kwargs: Any) -> tuple[Answer, Outcome]:
        query = urllib.parse.urlencode({"code": code, "state": state})
        return self.get(f"/oauth2/callback?{query}", session=True, **kwargs)

    def pre_login(self) -> tuple[str, list[Any]]:
        """The jar's pre-login cookie: its name and its opened fields."""
        name = next(n for n in self.jar if n.startswith("authz-login-"))
        opened = self.ring.open(self.jar[name], b"pre-login")
        assert opened is not None
        return name, json.loads(opened.plaintext)


def header(answer: Answer, name: str) -> str:
    return next(v for k, v in (*answer.headers, *answer.response_headers) if k == name)


def cookies_set(answer: Answer) -> list[str]:
    return [v for k, v in (*answer.headers, *answer.response_headers) if k == "set-cookie"]


def query_of(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def s256(verifier: str) -> str:
    return (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )


@pytest.fixture
def op() -> Iterator[ScriptedProvider]:
    with ScriptedProvider() as provider:
        provider.register(CLIENT, SECRET)
        yield provider


@pytest.fixture
def web(op: ScriptedProvider, tmp_path: Path) -> Iterator[Web]:
    (tmp_path / "client-secret").write_text(SECRET + "\n")
    login: dict[str, Any] = {
        "issuer": {"name": "op"},
        "clientId": CLIENT,
        "clientSecretFile": "client-secret",
        "scopes": ["openid", "offline_access"],
        "loginPath": "/oauth2/login",
        "postLogoutRedirectUris": [f"https://{HOST}/bye", f"https://{HOST}/other"],
        "waitMillis": 2000,
        "session": {"keysFile": "session-keys"},
    }
    site = Web(op, tmp_path, [secrets.token_bytes(32)], login)
    site.build()
    yield site
    assert site.runtime is not None
    site.runtime.close()
    site.keys_manager.close()
