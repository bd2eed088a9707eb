"""`discoveryUrl`: OIDC discovery at an explicit URL (Azure AD B2C user flows put it under a
policy path), fetched by the real key manager from a real HTTP server; the document must
still name the configured issuer exactly, or no key is trusted (issue 12)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from authz.keys.remote import RemoteKeys
from authz.policy.files import DirectorySource, load
from authz.policy.store import PolicyStore
from authz.request.assembly import pipeline
from authz.request.cache import TokenCache
from authz.request.view import request_view
from tests.support.docs import write
from tests.support.keyserver import KeyServer
from tests.support.snapshots import bearer_token
from tests.support.tokens import ISSUER, NOW, signing_key
from tests.unit.policy.conftest import issuer_doc, policy_doc

USER_FLOW = "/tenant.onmicrosoft.com/b2c_1_signin/v2.0"


@pytest.fixture
def server() -> Iterator[KeyServer]:
    with KeyServer() as srv:
        srv.json("/keys", {"keys": [signing_key("ES256", "k1")[1]]})
        yield srv


@pytest.fixture
def store() -> Iterator[PolicyStore]:
    store = PolicyStore()
    yield store
    store.close()


def status(store: PolicyStore) -> tuple[int, str]:
    checker = pipeline(store, TokenCache(0), clock=lambda: NOW)
    view = request_view(
        "GET", "api.example", "/", {"authorization": f"Bearer {bearer_token()}"}, {}
    )
    answer, _ = checker.check(view)
    return answer.status, answer.reason


def serve_issuer(tmp_path: Path, server: KeyServer, store: PolicyStore) -> RemoteKeys:
    doc = issuer_doc(
        iss=ISSUER,
        discoveryUrl=f"{server.url}{USER_FLOW}/.well-known/openid-configuration",
        algorithms=["ES256"],
        audiences=["api"],
        fetch={"allowInsecureHttp": True},
    )
    write(tmp_path / "issuer.yaml", doc)
    write(tmp_path / "api.yaml", policy_doc(targets={"hosts": ["api.example"]}))
    load(DirectorySource(tmp_path), store)
    issuer = store.issuer("JWTIssuer/default/idp")
    assert issuer is not None and isinstance(issuer.keys, RemoteKeys)
    assert issuer.keys.wait_attempted(5)
    return issuer.keys


def test_discovery_at_an_explicit_url(
    tmp_path: Path, server: KeyServer, store: PolicyStore
) -> None:
    server.discovery(ISSUER, "/keys", at=USER_FLOW)
    keys = serve_issuer(tmp_path, server, store)
    assert keys.state().ready and keys.state().kids == ("k1",)
    assert server.hits("/.well-known/openid-configuration") == 0  # not the issuer's own path
    assert status(store) == (200, "allowed")


def test_a_document_for_another_issuer_is_refused(
    tmp_path: Path, server: KeyServer, store: PolicyStore
) -> None:
    server.discovery("https://login.example/other/v2.0", "/keys", at=USER_FLOW)
    keys = serve_issuer(tmp_path, server, store)
    state = keys.state()
    assert not state.ready and "names issuer 'https://login.example/other/v2.0'" in (
        state.last_error or ""
    )
    assert server.hits("/keys") == 0
    assert status(store) == (401, "keys_unavailable")
