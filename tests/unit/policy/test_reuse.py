"""Rebuilds reuse what did not change (issue 11, item 17): the verified-token cache survives
a policy swap, and a cached token counts exactly while its issuer object is the same one.

Before, every swap cleared the whole cache (and every issuer was a new object), so any
edit anywhere cost every client a signature verification."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz.policy.files import DirectorySource, load
from tests.support.authz import CheckClient, check_request, check_server
from tests.support.docs import issuer, jwks_of, policy, rule, write
from tests.support.snapshots import bearer_token
from tests.support.tokens import NOW

ISSUER_ID = "JWTIssuer/default/idp"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[CheckClient]:
    (tmp_path / "jwks.json").write_text(json.dumps(jwks_of("ES256", "k1")))
    write(tmp_path / "idp.yaml", issuer(jwksFile="jwks.json"))
    write(tmp_path / "api.yaml", policy(hosts=["api.test"]))
    write(tmp_path / "other.yaml", policy("other", hosts=["other.test"]))
    with check_server(tmp_path, clock=lambda: NOW) as served:
        yield served


def cached(client: CheckClient, token: str) -> bool:
    """Whether a request with `token` is served from the token cache; and the same request
    over gRPC, as Envoy sends it, is allowed."""
    headers = {"authorization": f"Bearer {token}"}
    _response, outcome = client.checker.check(check_request(host="api.test", headers=headers))
    assert outcome.decision.allowed and outcome.authentication is not None
    response = client.check(host="api.test", headers=headers)
    assert response.status.code == 0, response
    return outcome.authentication.reused


def reload(client: CheckClient, directory: Path) -> None:
    before = client.store.snapshot.version
    load(DirectorySource(directory), client.store)
    assert client.store.snapshot.version == before + 1


def test_an_unrelated_edit_keeps_cached_tokens_an_issuer_edit_voids_them(
    client: CheckClient, tmp_path: Path
) -> None:
    token = bearer_token()
    cached(client, token)  # verified once, now cached
    assert cached(client, token)
    issuer_before = client.store.issuer(ISSUER_ID)

    write(
        tmp_path / "other.yaml",
        policy("other", hosts=["other.test"], defaultAction="allowAnonymous"),
    )
    write(tmp_path / "new.yaml", policy("new", hosts=["new.test"]))
    reload(client, tmp_path)
    assert client.store.issuer(ISSUER_ID) is issuer_before
    assert cached(client, token)  # still a cache hit after the swap

    # The key file rewritten with the same key (other formatting): same issuer, same keys.
    (tmp_path / "jwks.json").write_text(json.dumps(jwks_of("ES256", "k1"), indent=2))
    reload(client, tmp_path)
    assert client.store.issuer(ISSUER_ID) is issuer_before
    assert cached(client, token)

    write(tmp_path / "idp.yaml", issuer(jwksFile="jwks.json", clockSkewSeconds=30))
    reload(client, tmp_path)
    assert client.store.issuer(ISSUER_ID) is not issuer_before
    assert not cached(client, token)  # verified again by the new issuer object
    assert cached(client, token)


def test_a_removed_key_voids_cached_tokens(client: CheckClient, tmp_path: Path) -> None:
    token = bearer_token()
    cached(client, token)
    (tmp_path / "jwks.json").write_text(json.dumps(jwks_of("ES256", "k2")))
    reload(client, tmp_path)
    response = client.check(host="api.test", headers={"authorization": f"Bearer {token}"})
    assert response.denied_response.status.code == 401


def test_a_policy_edit_applies_to_cached_tokens(client: CheckClient, tmp_path: Path) -> None:
    """What the policy decides (rules, audiences) is checked on every request, cached or not."""
    token = bearer_token(scope="read")
    cached(client, token)
    tightened = policy(hosts=["api.test"], rules=[rule("r", requireScopes={"allOf": ["write"]})])
    write(tmp_path / "api.yaml", tightened)
    reload(client, tmp_path)
    response = client.check(host="api.test", headers={"authorization": f"Bearer {token}"})
    assert response.denied_response.status.code == 403


def test_a_reverted_bad_issuer_edit_keeps_cached_tokens(
    client: CheckClient, tmp_path: Path
) -> None:
    """While an edit is refused the last good issuer serves; reverting it brings back that
    very object, so its cached tokens were never lost."""
    token = bearer_token()
    cached(client, token)
    issuer_before = client.store.issuer(ISSUER_ID)
    (tmp_path / "broken.json").write_text("{ not json")  # an error: not a revocation
    write(tmp_path / "idp.yaml", issuer(jwksFile="broken.json"))
    reload(client, tmp_path)
    assert not client.store.statuses[ISSUER_ID].accepted
    assert client.store.issuer(ISSUER_ID) is issuer_before and cached(client, token)
    write(tmp_path / "idp.yaml", issuer(jwksFile="jwks.json"))
    reload(client, tmp_path)
    assert client.store.statuses[ISSUER_ID].accepted
    assert client.store.issuer(ISSUER_ID) is issuer_before and cached(client, token)
