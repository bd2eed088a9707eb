"""A scripted OpenID provider on 127.0.0.1, for the faults a real one (Ory Hydra, in the
e2e tests) never produces: an ID token for another audience, another nonce or with a
wrong at_hash, a token endpoint that is slow or down, refresh tokens revoked at will.

It serves discovery, its JWKS (the shared ES256 test key of tests.support.tokens), a token
endpoint (authorization_code with PKCE S256 and refresh_token grants, client_secret_basic,
client_secret_post or private_key_jwt) and RFC 7009 revocation. There is no authorization
endpoint page: a test reads the redirect authz answers, and `issue()` hands out the code
the provider would have sent the browser back with.

    with ScriptedProvider() as op:
        op.register("web", "secret")
        code = op.issue(client_id="web", sub="alice", nonce=nonce, challenge=challenge)
        op.id_token_claims["aud"] = "someone-else"         # the next ID token lies
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt

from authz.devtools import mint_token
from authz.keys.client_auth import ASSERTION_TYPE
from tests.support.served import ServedInThread
from tests.support.tokens import signing_key


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def at_hash(token: str) -> str:
    return _b64url(hashlib.sha256(token.encode()).digest()[:16])


@dataclass
class _Grant:
    client_id: str
    sub: str
    nonce: str | None
    challenge: str
    scope: str
    redirect_uri: str | None = None


@dataclass
class _State:
    clients: dict[str, str] = field(default_factory=dict)  # id -> secret ("" for a key)
    client_keys: dict[str, Any] = field(default_factory=dict)  # id -> public key object
    codes: dict[str, _Grant] = field(default_factory=dict)
    refresh: dict[str, _Grant] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)
    counts: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


class ScriptedProvider(ServedInThread[ThreadingHTTPServer]):
    def __init__(self) -> None:
        self.state = _State()
        self.id_token_claims: dict[str, Any] = {}  # merged into every ID token issued
        self.bad_at_hash = False
        self.delay = 0.0  # seconds the token endpoint waits before answering
        self.expires_in = 3600
        self.omit_id_token = False
        self.down = False  # the token endpoint answers 503
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        super().__init__(server, poll_interval=0.02)
        self.issuer = f"http://127.0.0.1:{self.port}"

    # -- what a test scripts -----------------------------------------------------------------

    def register(self, client_id: str, secret: str = "", public_key: Any = None) -> None:
        with self.state.lock:
            self.state.clients[client_id] = secret
            if public_key is not None:
                self.state.client_keys[client_id] = public_key

    def issue(
        self,
        *,
        client_id: str,
        sub: str,
        nonce: str | None,
        challenge: str,
        scope: str = "openid offline_access",
        redirect_uri: str | None = None,
    ) -> str:
        code = "code-" + secrets.token_urlsafe(12)
        with self.state.lock:
            self.state.codes[code] = _Grant(client_id, sub, nonce, challenge, scope, redirect_uri)
        return code

    def hits(self, path: str) -> int:
        with self.state.lock:
            return self.state.counts[path]

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "end_session_endpoint": f"{self.issuer}/logout",
            "revocation_endpoint": f"{self.issuer}/revoke",
            "jwks_uri": f"{self.issuer}/jwks",
            "code_challenge_methods_supported": ["S256"],
        }

    # -- the token endpoint ------------------------------------------------------------------

    def tokens(self, grant: _Grant, *, nonce: str | None) -> dict[str, Any]:
        now = int(time.time())
        access = "at-" + secrets.token_urlsafe(16)
        refresh = "rt-" + secrets.token_urlsafe(16)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": grant.sub,
            "aud": grant.client_id,
            "iat": now,
            "exp": now + self.expires_in,
            "email": f"{grant.sub}@example.test",
            "at_hash": at_hash("x" + access if self.bad_at_hash else access),
        }
        if nonce is not None:
            claims["nonce"] = nonce
        claims.update(self.id_token_claims)
        body: dict[str, Any] = {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "refresh_token": refresh,
            "scope": grant.scope,
        }
        if not self.omit_id_token:
            body["id_token"] = mint_token(signing_key("ES256", "k1")[0], claims)
        with self.state.lock:
            self.state.refresh[refresh] = grant
        return body


def _handler(op: ScriptedProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            with op.state.lock:
                op.state.counts[path] += 1
            if path == "/.well-known/openid-configuration":
                self._json(200, op.discovery())
            elif path == "/jwks":
                self._json(200, {"keys": [signing_key("ES256", "k1")[1]]})
            else:
                self._json(404, {"error": "not_found"})

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0]
            with op.state.lock:
                op.state.counts[path] += 1
            length = int(self.headers.get("Content-Length") or 0)
            form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
            if op.delay:
                time.sleep(op.delay)
            if op.down:
                self._json(503, {"error": "temporarily_unavailable"})
                return
            client = self._client(form, path)
            if client is None:
                self._json(401, {"error": "invalid_client"})
            elif path == "/revoke":
                with op.state.lock:
                    op.state.revoked.add(form.get("token", ""))
                self._json(200, {})
            elif path == "/token":
                self._token(client, form)
            else:
                self._json(404, {"error": "not_found"})

        def _client(self, form: dict[str, str], path: str) -> str | None:
            """The authenticated client id (basic, post or private_key_jwt), or None."""
            header = self.headers.get("Authorization", "")
            with op.state.lock:
                clients = dict(op.state.clients)
                keys = dict(op.state.client_keys)
            if header.startswith("Basic "):
                pair = base64.b64decode(header[6:]).decode()
                cid, _, secret = pair.partition(":")
                cid, secret = urllib.parse.unquote_plus(cid), urllib.parse.unquote_plus(secret)
                return cid if clients.get(cid) == secret and secret else None
            if form.get("client_assertion_type") == ASSERTION_TYPE:
                cid = form.get("client_id", "")
                try:
                    claims = jwt.decode(
                        form.get("client_assertion", ""),
                        keys[cid],
                        algorithms=["ES256", "RS256"],
                        audience=f"{op.issuer}{path}",
                        issuer=cid,
                    )
                except (KeyError, jwt.PyJWTError):
                    return None
                return cid if claims.get("sub") == cid else None
            cid = form.get("client_id", "")
            secret = form.get("client_secret", "")
            return cid if secret and clients.get(cid) == secret else None

        def _token(self, client: str, form: dict[str, str]) -> None:
            if form.get("grant_type") == "authorization_code":
                with op.state.lock:
                    grant = op.state.codes.pop(form.get("code", ""), None)
                verifier = form.get("code_verifier", "")
                challenge = _b64url(hashlib.sha256(verifier.encode()).digest())
                if grant is None or grant.client_id != client or grant.challenge != challenge:
                    self._json(400, {"error": "invalid_grant"})
                    return
                if grant.redirect_uri is not None and grant.redirect_uri != form.get(
                    "redirect_uri"
                ):
                    self._json(400, {"error": "invalid_grant"})
                    return
                self._json(200, op.tokens(grant, nonce=grant.nonce))
            elif form.get("grant_type") == "refresh_token":
                token = form.get("refresh_token", "")
                with op.state.lock:
                    grant = op.state.refresh.pop(token, None)
                    revoked = token in op.state.revoked
                if grant is None or revoked or grant.client_id != client:
                    self._json(400, {"error": "invalid_grant"})
                    return
                self._json(200, op.tokens(grant, nonce=None))
            else:
                self._json(400, {"error": "unsupported_grant_type"})

        def _json(self, status: int, doc: Any) -> None:
            body = json.dumps(doc).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler
