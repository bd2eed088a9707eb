"""A policy's `login` block as the request path reads it: the OpenID client and session
settings browser sign-in needs, secrets already read and checked (authz.policy.compile_login
builds it at build time)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from authz.keys.client_auth import ClientAuth
from authz.oidc.http import HttpSettings
from authz.oidc.seal import KeyRing


@dataclass(frozen=True, slots=True)
class SessionSettings:
    cookie: str
    keys: KeyRing
    store: Literal["cookie", "redis"]
    idle: int
    absolute: int


@dataclass(frozen=True, slots=True)
class LoginSettings:
    """What sign-in needs on the request path; `iss` names the provider among the policy's
    issuers (`CompiledPolicy.issuers_by_iss`)."""

    iss: str
    client: ClientAuth
    scopes: tuple[str, ...]
    parameters: tuple[tuple[str, str], ...]
    callback_path: str
    logout_path: str
    login_path: str | None
    post_logout_uris: tuple[str, ...]
    public_port: int | None
    identity: Literal["idToken", "accessToken"]
    refresh_before: int
    wait: float  # seconds
    login_timeout: int
    session: SessionSettings
    csrf: Literal["origin", "off"]
    trusted_origins: frozenset[str]
    http: HttpSettings

    @property
    def paths(self) -> tuple[str, ...]:
        """The paths sign-in answers itself, never forwarded upstream."""
        return tuple(p for p in (self.callback_path, self.logout_path, self.login_path) if p)
