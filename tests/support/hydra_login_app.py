"""The login, consent and logout app Ory Hydra sends browsers to (standard library only).

Hydra owns no user database: for the authorization code flow it redirects the browser to
``urls.login`` with a ``login_challenge``, then to ``urls.consent``, and for RP-initiated
logout to ``urls.logout``; the app accepts each challenge through Hydra's admin API and
sends the browser back to the ``redirect_to`` Hydra returns. This one:

* ``GET /login``: a form (``#username``, ``#submit``) unless Hydra says ``skip`` (a remembered
  login), which is accepted with the same subject at once. ``POST /login`` accepts with
  ``remember: true``, which gives the Hydra session cookie RP-initiated logout needs.
* ``GET /consent``: no page; grants the requested scopes and audiences and puts ``email``
  in the ID token and ``roles`` in the access token (see :data:`ROLES`).
* ``GET /logout``: accepts at once.
* ``GET /callback`` and ``GET /logged-out``: plain pages for a client's redirect targets,
  showing the query they were reached with (a code only by its prefix and length).

Every accepted step is recorded in :attr:`LoginApp.events` (e.g. ``("login", "alice")``).
Challenges are ~1.5 KB opaque blobs in Hydra v2.3, so they are URL-encoded for the admin API.

In a test: ``with LoginApp(admin_url) as app:`` (a thread in this process), or standalone:
``python -m tests.support.hydra_login_app --port 4446 --admin http://127.0.0.1:4445``.
"""

from __future__ import annotations

import argparse
import html
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.served import ServedInThread

ROLES = ("tester",)
_FLOW = "/admin/oauth2/auth/requests"


class AdminError(RuntimeError):
    """Hydra's admin API refused a call (the message has its status and body)."""


def admin_call(admin: str, method: str, path: str, challenge: str, body: Any = None) -> Any:
    """``METHOD {admin}{_FLOW}{path}?<kind>_challenge=...``; the JSON answer."""
    kind = path.strip("/").split("/")[0]
    url = f"{admin}{_FLOW}{path}?{kind}_challenge={urllib.parse.quote(challenge, safe='')}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - the test's own Hydra on loopback
        url, data, {"Content-Type": "application/json"}, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        with exc:
            raise AdminError(f"{method} {path}: {exc.code} {exc.read()[:500]!r}") from None


def _page(title: str, body: str) -> bytes:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em} dt{font-weight:bold}</style>"
        f"</head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    ).encode()


def _login_form(challenge: str, client: str) -> bytes:
    return _page(
        "Test login",
        f"<p>Signing in to <b>{html.escape(client)}</b></p>"
        "<form method='post' action='/login'>"
        f"<input type='hidden' name='challenge' value='{html.escape(challenge, quote=True)}'>"
        "<label>User <input id='username' name='username' autofocus></label> "
        "<button id='submit' type='submit'>Sign in</button></form>",
    )


def _shown(name: str, value: str) -> str:
    """A query value as the page shows it: an authorization code only by its prefix and
    length (pages end up in screenshots)."""
    if name == "code":
        return f"{value[:7]}... ({len(value)} characters)"
    return value[:200]


def _query_page(title: str, query: dict[str, list[str]]) -> bytes:
    rows = "".join(
        f"<dt>{html.escape(k)}</dt>"
        f"<dd id='{html.escape(k, quote=True)}'>{html.escape(_shown(k, v[0]))}</dd>"
        for k, v in sorted(query.items())
    )
    return _page(title, f"<dl>{rows}</dl>")


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        parts = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(parts.query)
        try:
            if parts.path == "/login":
                self._login(query["login_challenge"][0])
            elif parts.path == "/consent":
                self._consent(query["consent_challenge"][0])
            elif parts.path == "/logout":
                self._logout(query["logout_challenge"][0])
            elif parts.path == "/callback":
                self._send(200, _query_page("Callback", query))
            elif parts.path == "/logged-out":
                self._send(200, _query_page("Signed out", query))
            else:
                self._send(404, _page("Not found", ""))
        except (KeyError, AdminError) as exc:
            self._send(400, _page("Bad request", f"<pre>{html.escape(str(exc))}</pre>"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        try:
            if urllib.parse.urlsplit(self.path).path != "/login":
                self._send(404, _page("Not found", ""))
                return
            self._accept_login(form["challenge"][0], form["username"][0].strip())
        except (KeyError, AdminError) as exc:
            self._send(400, _page("Bad request", f"<pre>{html.escape(str(exc))}</pre>"))

    # -- the three challenges ----------------------------------------------------------------

    def _login(self, challenge: str) -> None:
        request = admin_call(self.server.admin, "GET", "/login", challenge)
        if request.get("skip"):
            self._accept_login(challenge, request["subject"])
            return
        client = request.get("client", {})
        self._send(200, _login_form(challenge, client.get("client_name") or client["client_id"]))

    def _accept_login(self, challenge: str, subject: str) -> None:
        if not subject:
            raise KeyError("username is empty")
        accepted = admin_call(
            self.server.admin,
            "PUT",
            "/login/accept",
            challenge,
            {"subject": subject, "remember": True, "remember_for": 3600},
        )
        self.server.record("login", subject)
        self._redirect(accepted["redirect_to"])

    def _consent(self, challenge: str) -> None:
        request = admin_call(self.server.admin, "GET", "/consent", challenge)
        subject = request["subject"]
        accepted = admin_call(
            self.server.admin,
            "PUT",
            "/consent/accept",
            challenge,
            {
                "grant_scope": request.get("requested_scope", []),
                "grant_access_token_audience": request.get("requested_access_token_audience", []),
                "session": {
                    "id_token": {"email": f"{subject}@example.test"},
                    "access_token": {"roles": list(ROLES)},
                },
            },
        )
        self.server.record("consent", subject)
        self._redirect(accepted["redirect_to"])

    def _logout(self, challenge: str) -> None:
        request = admin_call(self.server.admin, "GET", "/logout", challenge)
        accepted = admin_call(self.server.admin, "PUT", "/logout/accept", challenge)
        self.server.record("logout", request.get("subject", ""))
        self._redirect(accepted["redirect_to"])

    # -- responses ---------------------------------------------------------------------------

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, admin: str, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.admin = admin.rstrip("/")
        self.lock = threading.Lock()
        self.events: list[tuple[str, str]] = []

    def record(self, step: str, subject: str) -> None:
        with self.lock:
            self.events.append((step, subject))

    def handle_error(self, request: object, client_address: object) -> None:
        """A browser closing a keep-alive connection is not worth a traceback."""


class LoginApp(ServedInThread[_Server]):
    """The app on ``127.0.0.1:port`` (a free one by default), served from a thread."""

    def __init__(self, admin: str, port: int = 0) -> None:
        super().__init__(_Server(admin, port))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def events(self) -> list[tuple[str, str]]:
        with self._server.lock:
            return list(self._server.events)

    def hydra_urls(self) -> dict[str, str]:
        """Hydra's ``urls`` config section pointing at this app."""
        return {
            "login": f"{self.url}/login",
            "consent": f"{self.url}/consent",
            "logout": f"{self.url}/logout",
            "post_logout_redirect": f"{self.url}/logged-out",
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--admin", required=True, help="Hydra's admin URL")
    args = parser.parse_args(argv)
    app = LoginApp(args.admin, args.port)
    print(f"login app on {app.url} for Hydra admin {args.admin}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        app.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
