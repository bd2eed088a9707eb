"""A policy's `login` block compiled into `LoginSettings`: the provider resolved among the
policy's issuers, secrets read (files here; Secrets by the cluster source, into `refs`)
and checked once, at build time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt

from authz.keys.client_auth import ClientAuth, InlineSecret, Method
from authz.keys.remote import RemoteKeys
from authz.oidc.http import HttpSettings
from authz.oidc.seal import KeyRing, KeyRingError
from authz.policy.issuer import CompiledIssuer
from authz.policy.login import LoginSettings, SessionSettings
from authz.policy.schema import LOGIN_DEFAULTS, issuer_key
from authz.policy.validate import PolicyObject

# Where the cluster source puts what a login block's Secret references hold (PolicyObject.refs).
# field path in the login block -> refs key
SECRET_REFS = {
    "clientSecretRef": "login.clientSecretRef",
    "privateKeyRef": "login.privateKeyRef",
    "session.keysRef": "login.session.keysRef",
}
# Fields that read the authorizer's filesystem: policy files only.
FILE_FIELDS = ("clientSecretFile", "privateKeyFile", "session.keysFile")
# Authorization request parameters the flow sets itself.
RESERVED_PARAMETERS = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
        "response_mode",
        "request",
        "request_uri",
    }
)


class LoginError(ValueError):
    """A login block that cannot be used (the message names the field)."""


def login_issuer_key(obj: PolicyObject) -> str:
    """The key of the issuer object the login block names."""
    return issuer_key(obj.spec["login"]["issuer"], obj.namespace)


def compile_login(
    obj: PolicyObject, issuer: CompiledIssuer | None, trusted: Mapping[str, CompiledIssuer]
) -> LoginSettings:
    """The policy's login block; raises LoginError. `issuer` is the object it names,
    `trusted` the policy's issuers by `iss` (the provider must be one of them)."""
    spec = obj.spec["login"]
    if issuer is None or trusted.get(issuer.issuer) is not issuer:
        raise LoginError(
            f"spec.login.issuer: {login_issuer_key(obj)} is not one of this policy's issuers "
            "(or is not ready)"
        )
    if issuer.iss_values:
        raise LoginError("spec.login.issuer: sign-in needs an issuer without tenants")
    parameters = spec.get("authorizationParameters", {})
    reserved = sorted(RESERVED_PARAMETERS.intersection(parameters))
    if reserved:
        raise LoginError(
            f"spec.login.authorizationParameters: {', '.join(reserved)} are set by sign-in itself"
        )
    session = spec["session"]
    csrf = spec.get("csrf", {})
    return LoginSettings(
        iss=issuer.issuer,
        client=_client(obj, spec),
        scopes=tuple(dict.fromkeys(spec.get("scopes", ["openid"]))),
        parameters=tuple(sorted(parameters.items())),
        callback_path=spec.get("callbackPath", LOGIN_DEFAULTS["callbackPath"]),
        logout_path=spec.get("logoutPath", LOGIN_DEFAULTS["logoutPath"]),
        login_path=spec.get("loginPath"),
        post_logout_uris=tuple(spec.get("postLogoutRedirectUris", ())),
        public_port=spec.get("publicPort"),
        identity=spec.get("identity", "idToken"),
        refresh_before=spec.get("refreshBeforeSeconds", LOGIN_DEFAULTS["refreshBeforeSeconds"]),
        wait=spec.get("waitMillis", LOGIN_DEFAULTS["waitMillis"]) / 1000,
        login_timeout=spec.get("loginTimeoutSeconds", LOGIN_DEFAULTS["loginTimeoutSeconds"]),
        session=SessionSettings(
            cookie=session.get("cookieName", LOGIN_DEFAULTS["cookieName"]),
            keys=_key_ring(obj, session),
            store=session.get("store", "cookie"),
            idle=session.get("idleTimeoutSeconds", LOGIN_DEFAULTS["idleTimeoutSeconds"]),
            absolute=session.get(
                "absoluteTimeoutSeconds", LOGIN_DEFAULTS["absoluteTimeoutSeconds"]
            ),
        ),
        csrf=csrf.get("check", "origin"),
        trusted_origins=frozenset(o.lower() for o in csrf.get("trustedOrigins", ())),
        http=_http(issuer, obj),
    )


def reads_files(obj: PolicyObject) -> bool:
    """Whether the object's login block names files (then a rebuild compiles it again: the
    file may have changed while the object did not)."""
    login = obj.spec.get("login")
    if not isinstance(login, Mapping):
        return False
    return any(_field(login, name) is not None for name in FILE_FIELDS)


def file_fields(spec: Mapping[str, Any]) -> list[str]:
    """The login fields of a spec that read the authorizer's filesystem."""
    login = spec.get("login")
    if not isinstance(login, Mapping):
        return []
    return [f"spec.login.{name}" for name in FILE_FIELDS if _field(login, name) is not None]


def secret_refs(spec: Mapping[str, Any]) -> dict[str, Mapping[str, str]]:
    """The Secret references of a spec's login block, by `refs` key."""
    login = spec.get("login")
    if not isinstance(login, Mapping):
        return {}
    found = {}
    for name, key in SECRET_REFS.items():
        ref = _field(login, name)
        if isinstance(ref, Mapping):
            found[key] = ref
    return found


def _field(block: Mapping[str, Any], dotted: str) -> Any:
    node: Any = block
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _secret(obj: PolicyObject, block: Mapping[str, Any], name: str, where: str) -> str:
    """A secret named by `<name>File` (read here) or `<name>Ref` (read by the cluster source
    into `refs`); `where` is the block's field path (`login.`, `login.session.`)."""
    text: str
    if f"{name}File" in block:
        path = Path(obj.origin).parent / str(block[f"{name}File"])
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise LoginError(f"spec.{where}{name}File: cannot read {path}: {exc}") from None
    else:
        found = obj.refs.get(f"{where}{name}Ref")
        if found is None:
            raise LoginError(
                f"spec.{where}{name}Ref: Kubernetes Secrets are read in cluster mode only"
            )
        text = found
    text = text.removesuffix("\n").removesuffix("\r")
    if not text.strip():
        raise LoginError(f"spec.{where}{name}: the secret is empty")
    return text


def _client(obj: PolicyObject, spec: Mapping[str, Any]) -> ClientAuth:
    client_id = spec["clientId"]
    if "privateKeyFile" in spec or "privateKeyRef" in spec:
        text = _secret(obj, spec, "privateKey", "login.")
        try:
            jwk = json.loads(text)
            key = jwt.PyJWK(jwk)
        except (ValueError, jwt.PyJWTError) as exc:
            raise LoginError(f"spec.login.privateKey: not a private JWK: {exc}") from None
        if not isinstance(jwk, dict) or "d" not in jwk:
            raise LoginError("spec.login.privateKey: a public key; private_key_jwt signs")
        if key.algorithm_name.startswith("HS"):
            raise LoginError("spec.login.privateKey: a shared secret; use clientSecretFile")
        return ClientAuth(
            "private_key_jwt",
            client_id,
            algorithm=key.algorithm_name,
            key_id=jwk.get("kid"),
            key=key.key,
        )
    method: Method = spec.get("clientAuthentication", "client_secret_basic")
    secret = _secret(obj, spec, "clientSecret", "login.")
    return ClientAuth(method, client_id, InlineSecret(secret.encode("utf-8")))


def _key_ring(obj: PolicyObject, session: Mapping[str, Any]) -> KeyRing:
    text = _secret(obj, session, "keys", "login.session.")
    try:
        return KeyRing.parse(text)
    except KeyRingError as exc:
        raise LoginError(f"spec.login.session.keys: {exc}") from None


def _http(issuer: CompiledIssuer, obj: PolicyObject) -> HttpSettings:
    """Reach the provider as the issuer's keys are reached; a tenant's provider never on a
    loopback or link-local address."""
    keys = issuer.keys
    if isinstance(keys, RemoteKeys):
        settings = keys.settings
        return HttpSettings(
            timeout=float(settings.timeout),
            ca_pem=settings.ca_pem,
            allow_http=settings.allow_http,
            public_only=settings.public_only or obj.tenant,
        )
    return HttpSettings(public_only=obj.tenant)
