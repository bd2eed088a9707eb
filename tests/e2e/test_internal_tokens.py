"""Internal tokens end to end: Envoy -> authz -> the echo upstream. The upstream gets a JWT
authz signed instead of the client's token, and verifies it as any service would, with an
independent JOSE library (PyJWT's PyJWKClient) reading the JWKS that authz's discovery
document points to on its ops port. A rotated key signs within seconds, and the old key
stays published, so tokens signed before the rotation still verify."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt

from authz.devtools import generate_key
from tests.e2e.conftest import EnvoyStack
from tests.support.docs import issuer, policy, rule, write
from tests.support.procs import free_port
from tests.support.snapshots import bearer_token
from tests.support.tokens import ISSUER


def _external() -> str:
    now = int(time.time())
    return bearer_token(iat=now, exp=now + 600, scope="orders:read", azp="web-app")


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (a test URL)
        assert resp.headers["cache-control"] == "public, max-age=60"
        return json.loads(resp.read())


def _upstream_token(stack: EnvoyStack, token: str) -> str:
    resp = stack.get("/orders/1", token=token)
    assert resp.status == 200, resp.body
    seen = resp.upstream_headers
    assert token not in json.dumps(seen)  # the external token never reaches the upstream
    value = seen["authorization"]
    assert value.startswith("Bearer ")
    return value.removeprefix("Bearer ")


def test_the_upstream_verifies_the_internal_token_with_the_published_jwks(
    tmp_path: Path, envoy_stack: Callable[..., EnvoyStack]
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "2025-01.json").write_text(json.dumps(generate_key("ES256", "2025-01")[0]))
    policies = tmp_path / "policies"
    policies.mkdir()
    write(
        policies / "policy.yaml",
        issuer(),
        policy(
            internalToken={"audience": "orders-service", "lifetimeSeconds": 120},
            rules=[rule("read", requireScopes={"allOf": ["orders:read"]})],
        ),
    )
    ops_port = free_port()
    authz_issuer = f"http://127.0.0.1:{ops_port}/internal"
    stack = envoy_stack(
        policies,
        authz_http_port=ops_port,
        authz_args=["--internal-token-issuer", authz_issuer, "--internal-token-keys", str(keys)],
    )
    discovery = _get_json(f"{authz_issuer}/.well-known/openid-configuration")
    assert discovery["issuer"] == authz_issuer
    # An upstream's verifier. PyJWKClient refetches for an unknown kid at most every 30 s by
    # default (cooldown_duration) and caches the set for 300 s: in production the new key is
    # published that long before it signs. The test does not wait that long.
    jwks = jwt.PyJWKClient(discovery["jwks_uri"], cache_keys=True, cooldown_duration=0)

    def verify(token: str) -> dict[str, Any]:
        key = jwks.get_signing_key_from_jwt(token)
        return jwt.decode(
            token,
            key.key,
            algorithms=["ES256", "EdDSA"],
            audience="orders-service",
            issuer=authz_issuer,
        )

    external = _external()
    first = _upstream_token(stack, external)
    claims = verify(first)
    assert claims["sub"] == "alice" and claims["original_iss"] == ISSUER
    assert claims["scope"] == "orders:read" and claims["act"] == {"sub": "web-app"}
    assert claims["exp"] - claims["iat"] == 120
    assert jwt.get_unverified_header(first)["kid"] == "2025-01"
    assert _upstream_token(stack, external) == first  # a cached credential signs nothing

    # Rotation with overlap, as docs/credentials/internal-tokens.md describes it: publish
    # the new key first (`active` still names the old one), switch, keep the old published.
    (keys / "active").write_text("2025-01\n")
    (keys / "2025-06.json").write_text(json.dumps(generate_key("EdDSA", "2025-06")[0]))
    _wait_for(lambda: len(_get_json(discovery["jwks_uri"])["keys"]) == 2, "the new key published")
    assert jwt.get_unverified_header(_upstream_token(stack, _external()))["kid"] == "2025-01"
    (keys / "active").write_text("2025-06\n")
    rotated = _wait_for(
        lambda: _signed_by(_upstream_token(stack, _external()), "2025-06"), "the new key signing"
    )
    assert verify(rotated)["sub"] == "alice"  # the verifier refetches for the new kid
    assert verify(first)["sub"] == "alice"  # the old key still verifies its tokens
    published = _get_json(discovery["jwks_uri"])["keys"]
    assert sorted(k["kid"] for k in published) == ["2025-01", "2025-06"]
    assert all("d" not in k for k in published)


def _signed_by(token: str, kid: str) -> str | None:
    return token if jwt.get_unverified_header(token)["kid"] == kid else None


def _wait_for(probe: Callable[[], Any], what: str, seconds: float = 15.0) -> Any:
    """authz rereads the key directory every 5 s."""
    deadline = time.monotonic() + seconds
    while not (found := probe()):
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.5)
    return found
