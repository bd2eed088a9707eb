"""What the soak sends and what each answer must be.

Two policy variants alternate. Routes x token kinds give requests whose expected status
the driver knows for either variant, so every response is checked against the variant
that was serving when authz decided it (the audit line names the snapshot version):

    /soak/anon/*   allowAnonymous                      (both variants)
    /soak/data/*   requireScopes: read (A) / write (B)
    /soak/gate/*   deny (A) / requireToken (B)
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

from authz.devtools import generate_key, mint_token

ISS = "https://soak.test"
AUDIENCE = "soak-api"
ROUTES = ("anon", "data", "gate")
VALID = ("read", "write", "both")
INVALID = ("expired", "badsig", "garbage", "wrongaud")
KINDS = (*VALID, *INVALID, "missing")
_SCOPES = {"read": "read", "write": "write", "both": "read write"}


def issuer_doc(public: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "authz.io/v1alpha1",
        "kind": "JWTIssuer",
        "metadata": {"name": "soak", "namespace": "soak"},
        "spec": {"issuer": ISS, "jwks": {"keys": [public]}, "audiences": [AUDIENCE]},
    }


def policy_doc(variant: str) -> dict[str, Any]:
    scope = "read" if variant == "A" else "write"
    gate: dict[str, Any] = {"name": "gate", "match": {"pathPrefixes": ["/soak/gate/"]}}
    gate["action"] = "deny" if variant == "A" else "requireToken"
    return {
        "apiVersion": "authz.io/v1alpha1",
        "kind": "AuthzPolicy",
        "metadata": {"name": "soak", "namespace": "soak"},
        "spec": {
            "targets": {"hosts": ["*"]},
            "issuers": [{"name": "soak"}],
            "rules": [
                {
                    "name": "anon",
                    "match": {"pathPrefixes": ["/soak/anon/"]},
                    "action": "allowAnonymous",
                },
                {
                    "name": "data",
                    "match": {"pathPrefixes": ["/soak/data/"]},
                    "requireScopes": {"allOf": [scope]},
                },
                gate,
            ],
        },
    }


def expected(variant: str, route: str, kind: str) -> int:
    """The HTTP status the client must get."""
    valid = kind in VALID
    if route == "gate" and variant == "A":
        return 403  # a deny rule decides before any token is looked at
    if kind == "missing":
        return 200 if route == "anon" else 401
    if not valid:
        return 401  # on an anonymous route too: a token that is sent must be valid
    if route == "data":
        needed = "read" if variant == "A" else "write"
        return 200 if needed in _SCOPES[kind].split() else 403
    return 200


@dataclass(frozen=True)
class Tokens:
    """Pools of tokens per kind. The valid pools together exceed the cache so it evicts."""

    pools: dict[str, list[str]]

    @classmethod
    def mint(cls, private: dict[str, Any], lifetime: int, per_kind: int) -> Tokens:
        now = int(time.time())

        def token(scope: str, **claims: Any) -> str:
            body = {"iss": ISS, "sub": "soak", "aud": AUDIENCE, "iat": now, "exp": now + lifetime}
            body.update(scope=scope, jti=uuid.uuid4().hex, **claims)
            return mint_token(private, body)

        pools = {kind: [token(_SCOPES[kind]) for _ in range(per_kind)] for kind in VALID}
        pools["expired"] = [token("read", iat=now - 7200, exp=now - 3600) for _ in range(50)]
        pools["wrongaud"] = [token("read", aud="elsewhere") for _ in range(50)]
        pools["badsig"] = [
            t[:-8] + ("A" if t[-8] != "A" else "B") + t[-7:] for t in pools["read"][:50]
        ]
        pools["garbage"] = ["x.y.z", "not-a-token", "a" * 100]
        return cls(pools)

    def pick(self, kind: str, rng: random.Random) -> str | None:
        return None if kind == "missing" else rng.choice(self.pools[kind])


def keys() -> tuple[dict[str, Any], dict[str, Any]]:
    return generate_key("ES256", "soak-1")
