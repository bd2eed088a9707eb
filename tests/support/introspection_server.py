"""An RFC 7662 introspection endpoint the test controls, on 127.0.0.1.

It does what a provider's endpoint does (answers `active` and the token's members for the
tokens it knows, `{"active": false}` for any other) and enforces client authentication the
way RFC 7662 2.1 asks: `client_secret_basic`, `client_secret_post` or `private_key_jwt`
(the assertion verified with PyJWT, an independent JOSE library: signature, `iss` = `sub`
= client id, `aud`, `exp`, and a `jti` used once), answering 401 otherwise. With
`upstream` it authenticates the caller and then asks the real endpoint behind it (Ory
Hydra's admin API, which has no client authentication of its own), relaying its answer.

It also produces the faults a real provider cannot be made to produce on demand: a hang,
a redirect, an oversized, malformed or wrongly typed answer, an error status. Each request
is recorded (method, headers, form) so a test can check exactly what authz sent.

    with IntrospectionServer(ClientCheck("basic", "rs", secret="s3")) as idp:
        idp.answer("tok-1", {"active": True, "scope": "read", "sub": "alice"})
        idp.fault(delay=5)          # every call now hangs for 5 s
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import jwt

from tests.support.served import ServedInThread

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
PATH = "/introspect"


@dataclass
class ClientCheck:
    """What the endpoint requires of its caller. `public_key` verifies private_key_jwt."""

    method: Literal["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
    client_id: str = ""
    secret: str = ""
    public_key: Any = None
    audience: str | None = None  # private_key_jwt: the `aud` required (default: the URL)


@dataclass
class Fault:
    status: int = 200
    body: bytes | None = None  # replaces the answer
    delay: float = 0.0  # seconds before answering (a hang, if longer than the caller waits)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, list[str]]
    authenticated: bool


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self._reply(405, b'{"error":"invalid_request"}')

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        form = urllib.parse.parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
        owner = self.server.owner
        authenticated = owner.authenticate(self.headers, form)
        headers = {k.lower(): v for k, v in self.headers.items()}
        owner.record(Recorded("POST", self.path, headers, form, authenticated))
        fault = owner.current_fault()
        if fault.delay:
            time.sleep(fault.delay)
        if fault.body is not None or fault.status != 200:
            self._reply(fault.status, fault.body or b"", fault.headers)
            return
        if self.path.split("?", 1)[0] != PATH:
            self._reply(404, b'{"error":"not_found"}')
            return
        if not authenticated:
            self._reply(401, b'{"error":"invalid_client"}', {"WWW-Authenticate": "Basic"})
            return
        token = (form.get("token") or [""])[0]
        self._reply(200, json.dumps(owner.introspect(token)).encode(), fault.headers)

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the caller gave up waiting: what the hang tests are about
            pass
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: IntrospectionServer


class IntrospectionServer(ServedInThread[_Server]):
    def __init__(self, check: ClientCheck, *, upstream: str | None = None) -> None:
        self.check = check
        self.upstream = upstream
        self._lock = threading.Lock()
        self._answers: dict[str, dict[str, Any]] = {}
        self._fault = Fault()
        self._jtis: set[str] = set()
        self.requests: list[Recorded] = []
        self.calls: Counter[str] = Counter()  # by token
        server = _Server(("127.0.0.1", 0), _Handler)
        server.owner = self
        super().__init__(server, poll_interval=0.02)
        self.url = f"http://127.0.0.1:{self.port}{PATH}"

    # -- what it answers -------------------------------------------------------------------

    def answer(self, token: str, document: dict[str, Any]) -> None:
        with self._lock:
            self._answers[token] = document

    def revoke(self, token: str) -> None:
        with self._lock:
            self._answers.pop(token, None)

    def fault(self, **fault: Any) -> None:
        """Every call from now on: `Fault(**fault)`; no arguments: answer normally again."""
        with self._lock:
            self._fault = Fault(**fault)

    def current_fault(self) -> Fault:
        with self._lock:
            return self._fault

    def introspect(self, token: str) -> dict[str, Any]:
        with self._lock:
            self.calls[token] += 1
            known = self._answers.get(token)
        if self.upstream is not None:
            return _relay(self.upstream, token)
        return known if known is not None else {"active": False}

    # -- client authentication -------------------------------------------------------------

    def authenticate(self, headers: Any, form: dict[str, list[str]]) -> bool:
        check = self.check
        if check.method == "none":
            return True
        if check.method == "client_secret_basic":
            expected = base64.b64encode(
                f"{_form(check.client_id)}:{_form(check.secret)}".encode()
            ).decode()
            return bool(headers.get("Authorization") == f"Basic {expected}")
        one = {k: v[0] for k, v in form.items() if len(v) == 1}
        if check.method == "client_secret_post":
            return one.get("client_id") == check.client_id and one.get("client_secret") == (
                check.secret
            )
        if one.get("client_assertion_type") != ASSERTION_TYPE:
            return False
        try:
            claims = jwt.decode(
                one.get("client_assertion", ""),
                check.public_key,
                algorithms=["RS256", "PS256", "ES256", "ES384", "EdDSA"],
                audience=check.audience or self.url,
                issuer=check.client_id,
                options={"require": ["exp", "iat", "jti", "sub", "aud", "iss"]},
            )
        except jwt.PyJWTError:
            return False
        with self._lock:
            replayed = claims["jti"] in self._jtis
            self._jtis.add(claims["jti"])
        return (
            not replayed
            and claims["sub"] == check.client_id
            and one.get("client_id", check.client_id) == check.client_id
        )

    def record(self, recorded: Recorded) -> None:
        with self._lock:
            self.requests.append(recorded)


def _form(value: str) -> str:
    return urllib.parse.quote_plus(value, safe="")


def _relay(upstream: str, token: str) -> dict[str, Any]:
    """Ask the real endpoint behind this one (Hydra's admin API)."""
    body = urllib.parse.urlencode({"token": token}).encode()
    request = urllib.request.Request(  # noqa: S310  (a loopback URL the test chose)
        upstream, body, {"Content-Type": "application/x-www-form-urlencoded"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        answer: dict[str, Any] = json.loads(response.read())
    return answer
