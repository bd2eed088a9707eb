"""Removing a key revokes it (issue 11, item 14): an explicit, valid answer of "no keys" or
"these keys" takes effect at once; only errors (unreadable, unparsable, unreachable) keep
the last good set. Before, emptying or deleting a jwksFile, or replacing its key with one
authz refuses, kept the old key trusted, and a remote `{"keys": []}` kept old keys for
maxStaleSeconds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz.policy.files import DirectorySource, load
from authz.policy.store import PolicyStore
from authz.request.decision import Reason
from tests.support.docs import issuer, policy, write
from tests.support.keyserver import KeyServer
from tests.support.snapshots import bearer_token, check
from tests.support.tokens import signing_key

ISSUER_ID = "JWTIssuer/default/idp"


@pytest.fixture
def store() -> Iterator[PolicyStore]:
    store = PolicyStore()
    yield store
    store.close()


def _reason(store: PolicyStore) -> Reason:
    return check(store, token=bearer_token())[1].decision.reason  # type: ignore[arg-type]


def test_a_key_file_emptied_deleted_or_holding_a_refused_key_revokes(
    tmp_path: Path, store: PolicyStore
) -> None:
    keys = tmp_path / "jwks.json"
    good = json.dumps({"keys": [signing_key("ES256", "k1")[1]]})
    keys.write_text(good)
    write(tmp_path / "p.yaml", issuer(jwksFile="jwks.json", algorithms=["ES256"]), policy())
    source = DirectorySource(tmp_path)

    def reload(content: str | None) -> Reason:
        if content is None:
            keys.unlink()
        else:
            keys.write_text(content)
        load(source, store)
        return _reason(store)

    assert reload(good) == Reason.ALLOWED
    assert reload("{ not json") == Reason.ALLOWED  # an error: the last good keys serve
    assert not store.statuses[ISSUER_ID].accepted
    assert reload("") == Reason.KEYS_UNAVAILABLE  # emptied: no key is trusted
    assert reload(good) == Reason.ALLOWED
    assert reload(None) == Reason.KEYS_UNAVAILABLE  # deleted
    assert reload(json.dumps({"keys": []})) == Reason.KEYS_UNAVAILABLE
    refused = {"keys": [signing_key("RS256", "k1")[1]]}  # not an algorithm this issuer allows
    assert reload(json.dumps(refused)) == Reason.KEYS_UNAVAILABLE
    status = store.statuses[ISSUER_ID]
    assert status.accepted and "no usable key" in status.problems[0]  # serving, and said


def test_a_remote_answer_of_no_keys_takes_effect_at_once(
    tmp_path: Path, store: PolicyStore
) -> None:
    with KeyServer() as server:
        server.json("/jwks", {"keys": [signing_key("ES256", "k1")[1]]})
        spec = {"allowInsecureHttp": True, "maxStaleSeconds": 86400}
        doc = issuer(jwksUri=f"{server.url}/jwks", algorithms=["ES256"], fetch=spec)
        write(tmp_path / "p.yaml", doc, policy())
        load(DirectorySource(tmp_path), store)
        provider = store.issuer(ISSUER_ID).keys  # type: ignore[union-attr]
        assert provider.wait_attempted(5) and _reason(store) == Reason.ALLOWED  # type: ignore[attr-defined]
        server.fault("/jwks", status=503)
        provider.refresh()  # type: ignore[attr-defined]
        assert _reason(store) == Reason.ALLOWED  # an outage: the last good keys serve
        server.json("/jwks", {"keys": []})
        provider.refresh()  # type: ignore[attr-defined]
        assert _reason(store) == Reason.KEYS_UNAVAILABLE  # an answer: revoked now
        assert "no usable key" in provider.state().warnings[0]
