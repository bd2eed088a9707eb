"""A policy's `login` block: what validation refuses (the CRDs' CEL rules, in Python), what
compiling checks (the provider among the policy's issuers, the secrets), where secrets come
from in each mode, and that a key file change reaches the next build."""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from authz.policy.kube import validate_objects
from authz.policy.validate import PolicyError, validate_document
from tests.support.docs import host_grant, issuer, policy, rule
from tests.support.snapshots import serve, serve_sources
from tests.support.tokens import signing_key

KEY = base64.b64encode(secrets.token_bytes(32)).decode()


def _login(**overrides: Any) -> dict[str, Any]:
    return {
        "issuer": {"name": "idp"},
        "clientId": "web",
        "clientSecretFile": "secret",
        "session": {"keysFile": "keys"},
        **overrides,
    }


def _files(tmp_path: Path, **login: Any) -> tuple[dict[str, Any], ...]:
    (tmp_path / "secret").write_text("s3cret\n")
    (tmp_path / "keys").write_text(KEY + "\n")
    return (issuer(), policy("web", login=_login(**login), rules=[rule("app", login=False)]))


@pytest.mark.parametrize(
    ("login", "problem"),
    [
        ({"clientSecretRef": {"name": "s", "key": "k"}}, "exactly one client credential"),
        ({"clientSecretFile": None}, "exactly one client credential"),
        ({"clientAuthentication": "private_key_jwt"}, "private_key_jwt goes with privateKeyFile"),
        ({"scopes": ["email"]}, "login.scopes must include openid"),
        ({"logoutPath": "/oauth2/callback"}, "must differ"),
        ({"loginPath": "/oauth2/logout"}, "must differ"),
        ({"session": {}}, "exactly one of keysFile, keysRef"),
        (
            {
                "session": {
                    "keysFile": "k",
                    "idleTimeoutSeconds": 7200,
                    "absoluteTimeoutSeconds": 3600,
                }
            },
            "must not exceed",
        ),
        ({"callbackPath": "oauth2/callback"}, "does not match"),
        ({"session": {"keysFile": "k", "cookieName": "a b"}}, "does not match"),
        ({"csrf": {"check": "maybe"}}, "is not one of origin, off"),
        ({"postLogoutRedirectUris": ["/relative"]}, "does not match"),
        ({"unknown": 1}, "unknown field(s) unknown"),
    ],
)
def test_validation_refuses(login: dict[str, Any], problem: str) -> None:
    block = {k: v for k, v in _login(**login).items() if v is not None}
    with pytest.raises(PolicyError) as refused:
        validate_document(policy("web", login=block), "memory")
    assert any(problem in p for p in refused.value.problems), refused.value.problems


def test_a_valid_block_compiles(tmp_path: Path) -> None:
    served = serve(
        *_files(tmp_path, scopes=["openid", "email"], publicPort=8443),
        origin=str(tmp_path / "p.yaml"),
    )
    (web,) = served.snapshot.policies
    login = web.login
    assert login is not None and not served.statuses["AuthzPolicy/default/web"].problems
    assert (login.client.client_id, login.client.method) == ("web", "client_secret_basic")
    assert login.client.secret is not None and login.client.secret.value() == b"s3cret"
    assert login.scopes == ("openid", "email") and login.public_port == 8443
    assert login.paths == ("/oauth2/callback", "/oauth2/logout")
    assert login.session.cookie == "__Host-authz-session" and len(login.session.keys.keys) == 1
    assert (login.session.idle, login.session.absolute, login.wait) == (3600, 86400, 0.4)
    assert login.iss == web.issuers_by_iss[login.iss].issuer
    assert web.rules[0].login is False
    assert "s3cret" not in repr(login)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"issuer": {"name": "other"}}, "is not one of this policy's issuers"),
        (
            {"authorizationParameters": {"state": "x", "prompt": "login"}},
            "state are set by sign-in itself",
        ),
        ({"clientSecretFile": "missing"}, "cannot read"),
        ({"session": {"keysFile": "secret"}}, "AES-256 needs 32"),
        (
            {"clientSecretFile": None, "clientSecretRef": {"name": "s", "key": "k"}},
            "read in cluster mode only",
        ),
    ],
)
def test_compiling_refuses(tmp_path: Path, change: dict[str, Any], problem: str) -> None:
    docs = _files(tmp_path, **change)
    login = {k: v for k, v in docs[1]["spec"]["login"].items() if v is not None}
    docs[1]["spec"]["login"] = login
    served = serve(issuer("other", "https://other.test"), *docs, origin=str(tmp_path / "p.yaml"))
    status = served.statuses["AuthzPolicy/default/web"]
    assert not status.accepted and any(problem in p for p in status.problems), status.problems


def test_private_key_jwt_takes_a_private_jwk(tmp_path: Path) -> None:
    private, public = signing_key("ES256", "web-key")
    docs = _files(tmp_path, clientSecretFile=None, privateKeyFile="client.jwk")
    docs[1]["spec"]["login"] = {k: v for k, v in docs[1]["spec"]["login"].items() if v is not None}
    (tmp_path / "client.jwk").write_text(json.dumps(private))
    served = serve(*docs, origin=str(tmp_path / "p.yaml"))
    login = served.snapshot.policies[0].login
    assert login is not None
    assert (login.client.method, login.client.algorithm, login.client.key_id) == (
        "private_key_jwt",
        "ES256",
        "web-key",
    )
    (tmp_path / "client.jwk").write_text(json.dumps(public))
    served = serve(*docs, origin=str(tmp_path / "p.yaml"))
    problems = served.statuses["AuthzPolicy/default/web"].problems
    assert any("a public key" in p for p in problems), problems


def test_a_changed_key_file_reaches_the_next_build(tmp_path: Path) -> None:
    docs = _files(tmp_path)
    first = serve(*docs, origin=str(tmp_path / "p.yaml"))
    rotated = base64.b64encode(secrets.token_bytes(32)).decode()
    (tmp_path / "keys").write_text(f"{rotated}\n{KEY}\n")
    second = serve_sources(docs, previous=first, origin=str(tmp_path / "p.yaml"))
    login = second.snapshot.policies[0].login
    assert login is not None and len(login.session.keys.keys) == 2


SECRETS = {
    ("shop", "web", "secret"): b"s3cret",
    ("shop", "web", "keys"): (KEY + "\n").encode(),
}


def _read_secret(namespace: str, name: str, key: str) -> bytes:
    try:
        return SECRETS[(namespace, name, key)]
    except KeyError:
        raise ValueError(f"cannot read Secret {namespace}/{name}: 404 Not Found") from None


def _cluster_policy(**login: Any) -> dict[str, Any]:
    block = {
        "issuer": {"name": "idp"},
        "clientId": "web",
        "clientSecretRef": {"name": "web", "key": "secret"},
        "session": {"keysRef": {"name": "web", "key": "keys"}},
        **login,
    }
    return policy("web", namespace="shop", login={k: v for k, v in block.items() if v is not None})


def test_in_the_cluster_secrets_are_read_from_the_policys_namespace() -> None:
    served = serve_sources(
        cluster=[issuer(namespace="shop"), _cluster_policy(), host_grant("all", ["*"], ["shop"])],
        read_secret=_read_secret,
    )
    (web,) = served.snapshot.policies
    assert web.login is not None and web.login.client.secret is not None
    assert web.login.client.secret.value() == b"s3cret"
    assert web.login.http.public_only  # a tenant's provider: no loopback, no metadata service


@pytest.mark.parametrize(
    ("login", "problem"),
    [
        (
            {"clientSecretRef": None, "clientSecretFile": "/etc/authz/secret"},
            "spec.login.clientSecretFile: reads the authorizer's filesystem",
        ),
        (
            {"session": {"keysFile": "k"}},
            "spec.login.session.keysFile: reads the authorizer's filesystem",
        ),
        (
            {"clientSecretRef": {"name": "gone", "key": "secret"}},
            "spec.login.clientSecretRef: cannot read Secret shop/gone: 404",
        ),
    ],
)
def test_in_the_cluster_files_are_refused(login: dict[str, Any], problem: str) -> None:
    objects, failures = validate_objects([_cluster_policy(**login)], _read_secret)
    assert objects == []
    [(_origin, problems)] = failures.values()
    assert any(problem in p for p in problems), problems
