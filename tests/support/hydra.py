"""Ory Hydra v2.3.0 (built into the test-binary cache) as a real OAuth2 / OIDC provider.

:class:`HydraServer` runs ``hydra serve all --dev`` (plain HTTP on loopback, ``--dev`` cookies
named ``*_dev``) with in-memory storage, optionally together with the login/consent/logout
app (:mod:`tests.support.hydra_login_app`) for the authorization code flow. :class:`Hydra` is
what a test talks to: clients, tokens, introspection, revocation, keys.

    with HydraServer(login_app=True) as server:
        hydra = server.hydra
        app = hydra.client_credentials_client(scope="read", audience=["api"])
        token = hydra.client_credentials_token(app, "read", "api")     # ory_at_..., opaque
        assert hydra.introspect(token)["active"] is True

Findings the code relies on (Hydra v2.3.0): ``urls.logout`` must be set, and the client must
list ``post_logout_redirect_uris``, for RP-initiated logout; logout ends Hydra's login session
but does not revoke tokens; a refresh rotates the refresh token and deactivates the previous
access token; the first request that needs a signing key makes Hydra generate it (0.6-2.5 s),
so startup fetches the JWKS once. RFC 7662 introspection is served on the admin port only,
with no client authentication, and discovery names no ``introspection_endpoint`` (the
public ``/oauth2/introspect`` is 404): a test of an introspecting client's authentication
needs something in front of the admin port that checks it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import yaml

from tests.support import testbin
from tests.support.hydra_login_app import LoginApp
from tests.support.managed import ManagedServer
from tests.support.procs import Process, alarm_paused, free_port, scratch_dir, wait_for_http

SYSTEM_SECRET = "authz-e2e-system-secret-0123456789"
DEFAULT_SECRET = "client-secret-0123456789"


class HydraError(RuntimeError):
    """Hydra answered with an error status; ``status`` and the decoded ``body`` say why."""

    def __init__(self, method: str, url: str, status: int, body: Any) -> None:
        super().__init__(f"{method} {url}: HTTP {status}: {body}")
        self.status = status
        self.body = body


@dataclass(frozen=True)
class OAuthClient:
    """A client registered at Hydra, with the secret it authenticates with."""

    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...] = ()
    post_logout_redirect_uris: tuple[str, ...] = ()

    @property
    def basic_auth(self) -> str:
        """``client_secret_basic`` (RFC 6749 2.3.1: each part form-urlencoded first)."""
        pair = f"{urllib.parse.quote(self.client_id)}:{urllib.parse.quote(self.client_secret)}"
        return "Basic " + base64.b64encode(pair.encode()).decode()


@dataclass(frozen=True)
class Pkce:
    """An RFC 7636 verifier and its S256 challenge."""

    verifier: str
    challenge: str
    method: str = "S256"

    @classmethod
    def new(cls) -> Pkce:
        verifier = _b64url(secrets.token_bytes(48))
        return cls(verifier, _b64url(hashlib.sha256(verifier.encode()).digest()))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class Hydra:
    """Hydra's public (the issuer) and admin APIs."""

    public: str  # http://127.0.0.1:PORT, equal to the issuer (no trailing slash)
    admin: str

    @property
    def issuer(self) -> str:
        return self.public

    # -- HTTP --------------------------------------------------------------------------------

    def call(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """One request; the decoded JSON answer (None for an empty body), or HydraError."""
        request = urllib.request.Request(url, body, dict(headers or {}), method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                raw = exc.read()
                try:
                    detail = json.loads(raw)
                except ValueError:
                    detail = raw[:500]
                raise HydraError(method, url, exc.code, detail) from None
        return json.loads(raw) if raw.strip() else None

    def get(self, url: str) -> Any:
        return self.call("GET", url)

    def post_json(self, url: str, doc: Any) -> Any:
        return self.call(
            "POST", url, json.dumps(doc).encode(), {"Content-Type": "application/json"}
        )

    def post_form(self, url: str, form: Mapping[str, str], client: OAuthClient | None) -> Any:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if client is not None:
            headers["Authorization"] = client.basic_auth
        return self.call("POST", url, urllib.parse.urlencode(form).encode(), headers)

    def discovery(self) -> dict[str, Any]:
        doc: dict[str, Any] = self.get(f"{self.public}/.well-known/openid-configuration")
        return doc

    # -- clients -----------------------------------------------------------------------------

    def create_client(self, fields: Mapping[str, Any]) -> OAuthClient:
        """Register a client from raw admin-API fields (Hydra picks the id)."""
        doc = {"client_secret": DEFAULT_SECRET, **fields}
        created = self.post_json(f"{self.admin}/admin/clients", doc)
        return OAuthClient(
            created["client_id"],
            doc["client_secret"],
            tuple(created.get("redirect_uris") or ()),
            tuple(created.get("post_logout_redirect_uris") or ()),
        )

    def client_credentials_client(
        self,
        *,
        scope: str,
        audience: Sequence[str] = (),
        access_token_strategy: str = "opaque",
        name: str = "batch-job",
    ) -> OAuthClient:
        """A machine client: client_credentials, ``client_secret_basic``; its access tokens
        are opaque (``ory_at_...``, checked by introspection) unless the strategy is ``jwt``."""
        return self.create_client(
            {
                "client_name": name,
                "grant_types": ["client_credentials"],
                "response_types": ["token"],
                "scope": scope,
                "audience": list(audience),
                "token_endpoint_auth_method": "client_secret_basic",
                "access_token_strategy": access_token_strategy,
            }
        )

    def auth_code_client(
        self,
        *,
        redirect_uris: Sequence[str],
        post_logout_redirect_uris: Sequence[str] = (),
        scope: str = "openid offline_access email",
        audience: Sequence[str] = (),
        access_token_strategy: str = "opaque",
        name: str = "web-app",
    ) -> OAuthClient:
        """A web app: authorization_code + refresh_token, ``client_secret_basic``. It gets a
        refresh token only when ``offline_access`` is both allowed here and requested."""
        return self.create_client(
            {
                "client_name": name,
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "scope": scope,
                "audience": list(audience),
                "redirect_uris": list(redirect_uris),
                "post_logout_redirect_uris": list(post_logout_redirect_uris),
                "token_endpoint_auth_method": "client_secret_basic",
                "access_token_strategy": access_token_strategy,
            }
        )

    # -- tokens ------------------------------------------------------------------------------

    def token_request(self, client: OAuthClient, form: Mapping[str, str]) -> dict[str, Any]:
        """POST the token endpoint with ``client_secret_basic``; the whole token response."""
        answer: dict[str, Any] = self.post_form(f"{self.public}/oauth2/token", form, client)
        return answer

    def client_credentials_token(self, client: OAuthClient, scope: str, audience: str = "") -> str:
        form = {"grant_type": "client_credentials", "scope": scope}
        if audience:
            form["audience"] = audience
        value: str = self.token_request(client, form)["access_token"]
        return value

    def authorization_url(
        self,
        client: OAuthClient,
        *,
        redirect_uri: str,
        scope: str,
        state: str,
        nonce: str,
        pkce: Pkce,
    ) -> str:
        """Where a browser starts the authorization code flow (with PKCE S256)."""
        endpoint = self.discovery()["authorization_endpoint"]
        query = {
            "response_type": "code",
            "client_id": client.client_id,
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": state,
            "nonce": nonce,
            "code_challenge": pkce.challenge,
            "code_challenge_method": pkce.method,
        }
        return f"{endpoint}?{urllib.parse.urlencode(query)}"

    def exchange_code(
        self, client: OAuthClient, *, code: str, redirect_uri: str, verifier: str
    ) -> dict[str, Any]:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        return self.token_request(client, form)

    def refresh(self, client: OAuthClient, refresh_token: str) -> dict[str, Any]:
        return self.token_request(
            client, {"grant_type": "refresh_token", "refresh_token": refresh_token}
        )

    def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662 on the admin port (no client authentication there)."""
        answer: dict[str, Any] = self.post_form(
            f"{self.admin}/admin/oauth2/introspect", {"token": token}, None
        )
        return answer

    def revoke(self, client: OAuthClient, token: str) -> None:
        """RFC 7009 on the public port, authenticated as the client the token was issued to."""
        self.post_form(f"{self.public}/oauth2/revoke", {"token": token}, client)

    def end_session_url(self, *, id_token: str, post_logout_redirect_uri: str, state: str) -> str:
        """RP-initiated logout, for a browser (the end_session_endpoint of discovery)."""
        query = {
            "id_token_hint": id_token,
            "post_logout_redirect_uri": post_logout_redirect_uri,
            "state": state,
        }
        endpoint = self.discovery()["end_session_endpoint"]
        return f"{endpoint}?{urllib.parse.urlencode(query)}"

    # -- keys --------------------------------------------------------------------------------

    def jwks(self) -> dict[str, Any]:
        doc: dict[str, Any] = self.get(f"{self.public}/.well-known/jwks.json")
        return doc

    def rotate(self, kid: str, key_set: str = "hydra.jwt.access-token") -> None:
        """Add a signing key to a key set: Hydra signs with the newest."""
        self.post_json(
            f"{self.admin}/admin/keys/{key_set}", {"alg": "RS256", "kid": kid, "use": "sig"}
        )


@dataclass
class HydraServer(ManagedServer):
    """``with HydraServer(...) as server: server.hydra``. Options:

    * ``login_app``: also run the login/consent/logout app and point ``urls.*`` at it;
    * ``access_token_strategy``: ``jwt`` for every client (Hydra's default is opaque; a
      client can also choose its own);
    * ``config``: more Hydra settings, merged over the defaults (e.g. ``{"ttl":
      {"access_token": "5s"}}``).
    """

    login_app: bool = False
    access_token_strategy: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    ready_timeout: float = 60.0
    log_level: str = "warn"
    process: Process | None = field(default=None, init=False)
    app: LoginApp | None = field(default=None, init=False)
    dir: Path | None = field(default=None, init=False)
    _hydra: Hydra | None = field(default=None, init=False)

    @property
    def hydra(self) -> Hydra:
        if self._hydra is None:
            raise RuntimeError("Hydra not started")
        return self._hydra

    def settings(self, public_port: int, admin_port: int) -> dict[str, Any]:
        """The Hydra configuration this server runs with."""
        urls: dict[str, Any] = {"self": {"issuer": f"http://127.0.0.1:{public_port}"}}
        if self.app is not None:
            urls.update(self.app.hydra_urls())
        settings: dict[str, Any] = {
            "dsn": "memory",
            "serve": {
                "public": {"host": "127.0.0.1", "port": public_port},
                "admin": {"host": "127.0.0.1", "port": admin_port},
            },
            "urls": urls,
            "secrets": {"system": [SYSTEM_SECRET]},
            "sqa": {"opt_out": True},
            "log": {"level": self.log_level},
        }
        if self.access_token_strategy is not None:
            settings["strategies"] = {"access_token": self.access_token_strategy}
        return _merge(settings, self.config)

    def start(self) -> Self:
        with alarm_paused():  # the first run builds Hydra (~2 min), not a test's time
            binary = testbin.path("hydra")
        public_port, admin_port = free_port(), free_port()
        admin = f"http://127.0.0.1:{admin_port}"
        if self.login_app:
            self.app = LoginApp(admin)
        self.dir = scratch_dir("hydra-")
        config = self.dir / "hydra.yml"
        config.write_text(yaml.safe_dump(self.settings(public_port, admin_port)))
        argv: list[str | os.PathLike[str]] = [
            binary,
            "serve",
            "all",
            "--dev",
            "--sqa-opt-out",
            "-c",
            config,
        ]
        self._run(Process(argv, name="hydra"), lambda: self._ready(public_port, admin_port))
        return self

    def _ready(self, public_port: int, admin_port: int) -> None:
        public, admin = f"http://127.0.0.1:{public_port}", f"http://127.0.0.1:{admin_port}"
        wait_for_http(f"{public}/health/ready", self.ready_timeout, proc=self.process)
        wait_for_http(f"{admin}/health/ready", self.ready_timeout, proc=self.process)
        self._hydra = Hydra(public, admin)
        self._hydra.jwks()  # generate the signing keys now, not in a timed test step

    def stop(self) -> None:
        super().stop()
        if self.app is not None:
            self.app.close()
            self.app = None


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in, recursively for nested mappings."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
