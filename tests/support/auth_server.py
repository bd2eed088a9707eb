"""A tiny auth server with a fixed token table, for proving proxy configurations.

authz has no HTTP transport yet (issue 14), so the NGINX and Caddy fixture tests need
something that answers the proxies' auth subrequests the way a forward-auth service does.
This one decides from the ``Authorization`` header alone and records every request it got,
so a test can assert both what the client saw and what the proxy sent to the auth service:

=====================  =====================================================
``Bearer good``        200 + ``X-Auth-Subject: alice``
``Bearer anon``        200 without a subject header (anti-spoofing checks)
``Bearer forbidden``   403 + ``WWW-Authenticate: Bearer error="insufficient_scope"``
anything else          401 + ``WWW-Authenticate: Bearer realm="test", error="invalid_token"``
=====================  =====================================================

Deny bodies are JSON (``{"status": 401}``), so a test can tell them from the proxy's own pages.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.served import ServedInThread

CHALLENGE = 'Bearer realm="test", error="invalid_token"'
SCOPE_CHALLENGE = 'Bearer error="insufficient_scope"'
SUBJECT = "alice"


@dataclass(frozen=True)
class AuthCall:
    """One request as the auth server received it (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]


def decide(authorization: str | None) -> tuple[int, dict[str, str]]:
    """Status and response headers for an ``Authorization`` value (the table above)."""
    if authorization == "Bearer good":
        return 200, {"X-Auth-Subject": SUBJECT}
    if authorization == "Bearer anon":
        return 200, {}
    if authorization == "Bearer forbidden":
        return 403, {"WWW-Authenticate": SCOPE_CHALLENGE}
    return 401, {"WWW-Authenticate": CHALLENGE}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as proxies use it

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        with self.server.lock:
            self.server.calls.append(AuthCall(self.command, self.path, headers))
        status, extra = decide(self.headers.get("Authorization"))
        body = json.dumps({"status": status}).encode()
        self.send_response(status)
        for name, value in extra.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_HEAD = _answer

    def log_message(self, format: str, *args: object) -> None:
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.calls: list[AuthCall] = []

    def handle_error(self, request: object, client_address: object) -> None:
        """Proxies close idle keep-alive connections; that is not an error worth a traceback."""


class FixedAuthServer(ServedInThread[_Server]):
    """``with FixedAuthServer() as auth:`` on a free loopback port; ``auth.addr`` is host:port."""

    def __init__(self) -> None:
        super().__init__(_Server())

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def calls(self) -> list[AuthCall]:
        with self._server.lock:
            return list(self._server.calls)
