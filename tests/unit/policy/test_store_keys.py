"""Remote key sources across policy rebuilds: kept when unchanged, replaced or stopped otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authz.keys.remote import RemoteKeys
from authz.policy.files import DirectorySource, load
from authz.policy.store import PolicyStore
from tests.support.docs import write
from tests.support.keyserver import KeyServer
from tests.support.tokens import signing_key
from tests.unit.policy.conftest import issuer_doc, policy_doc

ID = "JWTIssuer/default/idp"


@pytest.fixture
def server() -> Iterator[KeyServer]:
    with KeyServer() as srv:
        srv.json("/jwks", {"keys": [signing_key("ES256", "k1")[1]]})
        srv.json("/jwks2", {"keys": [signing_key("ES256", "k2")[1]]})
        yield srv


@pytest.fixture
def store() -> Iterator[PolicyStore]:
    store = PolicyStore()
    yield store
    store.close()


def _issuer(server: KeyServer, path: str = "/jwks", **fetch: Any) -> dict[str, Any]:
    return issuer_doc(
        jwksUri=f"{server.url}{path}",
        algorithms=["ES256"],
        fetch={"allowInsecureHttp": True, **fetch},
    )


def _provider(store: PolicyStore) -> RemoteKeys:
    issuer = store.issuer(ID)
    assert issuer is not None and isinstance(issuer.keys, RemoteKeys)
    return issuer.keys


def _loaded(store: PolicyStore) -> RemoteKeys:
    keys = _provider(store)
    assert keys.wait_attempted(5) and keys.state().ready
    return keys


def test_unrelated_edits_keep_the_source_and_its_keys(
    tmp_path: Path, server: KeyServer, store: PolicyStore
) -> None:
    write(tmp_path / "issuer.yaml", _issuer(server))
    write(tmp_path / "api.yaml", policy_doc(targets={"hosts": ["a.example"]}))
    source = DirectorySource(tmp_path)
    load(source, store)
    first = _loaded(store)
    for host in ("b.example", "c.example"):
        write(tmp_path / "api.yaml", policy_doc(targets={"hosts": [host]}))
        load(source, store)
        assert _provider(store) is first
    write(tmp_path / "issuer.yaml", _issuer(server, refreshSeconds=120))
    load(source, store)
    assert _provider(store) is first and first.settings.refresh == 120
    assert server.hits("/jwks") == 1
    assert store.key_states()[ID].kids == ("k1",)


def test_a_new_key_url_replaces_the_source(
    tmp_path: Path, server: KeyServer, store: PolicyStore
) -> None:
    write(tmp_path / "issuer.yaml", _issuer(server))
    source = DirectorySource(tmp_path)
    load(source, store)
    first = _loaded(store)
    write(tmp_path / "issuer.yaml", _issuer(server, "/jwks2"))
    load(source, store)
    second = _loaded(store)
    assert second is not first and second.current().kids == ("k2",)
    assert first.state().next_refresh is None  # stopped
    (tmp_path / "issuer.yaml").unlink()
    load(source, store)
    assert store.key_states() == {} and second.state().next_refresh is None


def test_an_invalid_edit_keeps_the_serving_source(
    tmp_path: Path, server: KeyServer, store: PolicyStore
) -> None:
    write(tmp_path / "issuer.yaml", _issuer(server))
    source = DirectorySource(tmp_path)
    load(source, store)
    first = _loaded(store)
    write(tmp_path / "issuer.yaml", _issuer(server, "/jwks2", caFile="missing.pem"))
    load(source, store)
    assert not store.statuses[ID].accepted and store.statuses[ID].serving
    assert _provider(store) is first and first.state().next_refresh is not None
