"""How authz authenticates itself as an OAuth client: to an introspection endpoint (RFC 7662
2.1 requires it) and to a login provider's token endpoint (RFC 6749 3.2).

`client_secret_basic` and `client_secret_post` (RFC 6749 2.3.1), `private_key_jwt` (RFC 7523
2.2 and OIDC Core 9: a fresh signed assertion per call, so a captured one cannot be replayed
past its jti and minute), or `none` for an endpoint protected another way (a mesh, or
Hydra's admin port). Secrets come from a file, re-read when it changes (a rotated Secret
volume needs no restart), or inline once read (a Kubernetes Secret, a login block's secret);
they never appear in a repr, a log line or an error message.

It lives in authz.keys because that is the layer below both of its users (authz.introspection
and authz.oidc are siblings and may not import each other).
"""

from __future__ import annotations

import base64
import functools
import os
import secrets
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

Method = Literal["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
METHODS: tuple[Method, ...] = (
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
    "none",
)
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME = 60  # seconds; the assertion is signed for one call
ASSERTION_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")  # fmt: skip
_CURVE_ALGORITHM = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


class ClientAuthError(Exception):
    """The client credential cannot be used (unreadable file, not a private key...).
    The message names the file or the problem, never the secret."""


class Secret(Protocol):
    def value(self) -> bytes:
        """The secret's bytes; raises ClientAuthError."""
        ...


@dataclass(frozen=True, slots=True)
class InlineSecret:
    """A secret already read (a Kubernetes Secret; a login block's secret, read at build time).
    Compared by value, never shown."""

    data: bytes = field(repr=False)

    def value(self) -> bytes:
        return self.data


class FileSecret:
    """A secret in a file, read again when the file changes (size, mtime or inode), so a
    rotated secret takes effect on the next call. One trailing newline is not part of it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None
        self._data = b""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FileSecret) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    def __repr__(self) -> str:
        return f"FileSecret({str(self.path)!r})"

    def value(self) -> bytes:
        try:
            info = os.stat(self.path)
        except OSError as exc:
            raise ClientAuthError(f"cannot read {self.path}: {exc.strerror}") from None
        seen = (info.st_size, info.st_mtime_ns, info.st_ino)
        with self._lock:
            if seen != self._seen:
                try:
                    data = self.path.read_bytes()
                except OSError as exc:
                    raise ClientAuthError(f"cannot read {self.path}: {exc.strerror}") from None
                if data.endswith(b"\r\n"):
                    data = data[:-2]
                elif data.endswith(b"\n"):
                    data = data[:-1]
                if not data:
                    raise ClientAuthError(f"{self.path} is empty")
                self._data, self._seen = data, seen
            return self._data


@dataclass(frozen=True, slots=True)
class ClientAuth:
    """How authz proves it is `client_id` to one endpoint. `secret` is the client secret
    (secret methods) or the PEM private key (private_key_jwt); `key` instead holds a private
    key already parsed and checked (a login block's private JWK), `algorithm` then naming
    its algorithm."""

    method: Method
    client_id: str = ""
    secret: Secret | None = None
    algorithm: str | None = None  # private_key_jwt; None: the key's natural algorithm
    key_id: str | None = None  # private_key_jwt: the assertion's `kid`
    audience: str | None = None  # private_key_jwt: the assertion's `aud`; None: the endpoint
    key: Any = field(default=None, repr=False, compare=False)  # private_key_jwt: a parsed key

    def check(self) -> None:
        """Read the credential once, so a bad file or key fails when the policy is loaded;
        raises ClientAuthError."""
        if self.method == "private_key_jwt":
            self._signing_key()
        elif self.method != "none":
            self._secret()

    def apply(self, endpoint: str, now: float) -> tuple[dict[str, str], dict[str, str]]:
        """The form fields and headers that authenticate one call to `endpoint`."""
        if self.method == "none":
            return {}, {}
        if self.method == "client_secret_basic":
            secret = self._secret().decode("utf-8", "surrogateescape")
            pair = f"{_form(self.client_id)}:{_form(secret)}"  # RFC 6749 2.3.1
            basic = base64.b64encode(pair.encode("utf-8", "surrogateescape")).decode("ascii")
            return {}, {"Authorization": f"Basic {basic}"}
        if self.method == "client_secret_post":
            secret = self._secret().decode("utf-8", "surrogateescape")
            return {"client_id": self.client_id, "client_secret": secret}, {}
        key, algorithm = self._signing_key()
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.audience or endpoint,
            "jti": secrets.token_urlsafe(18),
            "iat": int(now),
            "exp": int(now) + ASSERTION_LIFETIME,
        }
        headers: dict[str, Any] = {"typ": "JWT"}
        if self.key_id:
            headers["kid"] = self.key_id
        assertion = jwt.encode(claims, key, algorithm=algorithm, headers=headers)
        form = {
            "client_id": self.client_id,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        }
        return form, {}

    def _secret(self) -> bytes:
        if self.secret is None:
            raise ClientAuthError(f"{self.method} needs a client secret")
        return self.secret.value()

    def _signing_key(self) -> tuple[Any, str]:
        if self.key is not None and self.algorithm:
            return self.key, self.algorithm
        if self.secret is None:
            raise ClientAuthError("private_key_jwt needs a private key")
        return signing_key(self.secret.value(), self.algorithm)


@functools.lru_cache(maxsize=32)
def signing_key(pem: bytes, algorithm: str | None) -> tuple[Any, str]:
    """The private key in `pem` and the algorithm to sign with; parsed once per key.
    Raises ClientAuthError for anything but an RSA, EC or Ed25519 private key, or an
    algorithm that does not fit the key."""
    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        # cryptography's messages describe the format, never the key material.
        raise ClientAuthError(f"not an unencrypted PEM private key: {exc}") from None
    family: tuple[str, ...]
    if isinstance(key, rsa.RSAPrivateKey):
        natural, family = "RS256", ("RS", "PS")
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        natural = _CURVE_ALGORITHM.get(key.curve.name, "")
        family = (natural,)
        if not natural:
            raise ClientAuthError(f"EC curve {key.curve.name} is not supported")
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        natural, family = "EdDSA", ("EdDSA",)
    else:
        raise ClientAuthError(f"{type(key).__name__} keys are not supported")
    chosen = algorithm or natural
    if chosen not in ASSERTION_ALGORITHMS or not chosen.startswith(family):
        raise ClientAuthError(f"algorithm {chosen} does not fit this {natural[:2]} key")
    return key, chosen


def _form(value: str) -> str:
    """application/x-www-form-urlencoded, as RFC 6749 2.3.1 asks before Basic encoding."""
    return urllib.parse.quote_plus(value, safe="")
