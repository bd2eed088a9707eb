"""The policy directory: last good versions, deletions and hot reload."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from authz.policy.files import DirectorySource, DirectoryWatcher, documents, load
from authz.policy.store import PolicyStore
from tests.support.docs import write
from tests.unit.policy.conftest import issuer_doc, policy_doc


def _setup(tmp_path: Path, jwks: dict[str, Any]) -> tuple[DirectorySource, PolicyStore]:
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    write(tmp_path / "issuer.yaml", issuer_doc(jwksFile="jwks.json"))
    write(tmp_path / "api.yaml", policy_doc(targets={"hosts": ["api.example"]}))
    source, store = DirectorySource(tmp_path), PolicyStore()
    load(source, store)
    return source, store


def _rule_names(store: PolicyStore) -> list[str]:
    policy = store.snapshot.select("api.example", {})
    return [r.name for r in policy.rules] if policy else []


def test_loads_directory(tmp_path: Path, es256_jwks: dict[str, Any]) -> None:
    _, store = _setup(tmp_path, es256_jwks)
    assert store.ready and store.snapshot.version == 1
    assert all(s.accepted and not s.problems for s in store.statuses.values())
    assert _rule_names(store) == ["all"]


def test_invalid_object_keeps_last_good_version(tmp_path: Path, es256_jwks: dict[str, Any]) -> None:
    source, store = _setup(tmp_path, es256_jwks)
    bad = policy_doc(targets={"hosts": ["api.example"]}, rules=[{"name": "x", "action": "maybe"}])
    write(tmp_path / "api.yaml", bad)
    load(source, store)
    assert _rule_names(store) == ["all"]
    status = store.statuses["AuthzPolicy/default/api"]
    assert not status.accepted and status.serving
    assert status.problems[0].startswith("spec.rules[0].action: 'maybe' is not one of")


def test_unparseable_file_keeps_its_objects(tmp_path: Path, es256_jwks: dict[str, Any]) -> None:
    source, store = _setup(tmp_path, es256_jwks)
    (tmp_path / "api.yaml").write_text("spec: [unclosed\n")
    result = load(source, store)
    assert (
        "cannot parse" in result.file_errors[0] and "keeping its last good" in result.file_errors[0]
    )
    assert _rule_names(store) == ["all"]


def test_bad_key_file_keeps_issuer_keys(tmp_path: Path, es256_jwks: dict[str, Any]) -> None:
    source, store = _setup(tmp_path, es256_jwks)
    (tmp_path / "jwks.json").write_text("{not json")
    load(source, store)
    status = store.statuses["JWTIssuer/default/idp"]
    assert not status.accepted and status.serving and "cannot read" in status.problems[0]
    assert list(store.snapshot.issuers) == ["JWTIssuer/default/idp"]


def test_deleted_objects_stop_serving(tmp_path: Path, es256_jwks: dict[str, Any]) -> None:
    source, store = _setup(tmp_path, es256_jwks)
    (tmp_path / "api.yaml").unlink()
    load(source, store)
    assert store.snapshot.select("api.example", {}) is None


def test_deleted_issuer_is_not_trusted_from_a_stale_policy(
    tmp_path: Path, es256_jwks: dict[str, Any]
) -> None:
    source, store = _setup(tmp_path, es256_jwks)
    (tmp_path / "issuer.yaml").unlink()
    load(source, store)
    policy = store.snapshot.select("api.example", {})
    assert policy is not None and policy.issuers_by_iss == {}
    assert "not found" in store.statuses["AuthzPolicy/default/api"].problems[0]


def test_duplicate_objects_first_file_wins(tmp_path: Path, es256_jwks: dict[str, Any]) -> None:
    source, store = _setup(tmp_path, es256_jwks)
    write(
        tmp_path / "zz-copy.yaml",
        policy_doc(targets={"hosts": ["api.example"]}, rules=[{"name": "other"}]),
    )
    result = load(source, store)
    assert any("already defined" in e for e in result.file_errors)
    assert _rule_names(store) == ["all"]


def test_hidden_files_and_json_are_not_policy(tmp_path: Path, es256_jwks: dict[str, Any]) -> None:
    source, store = _setup(tmp_path, es256_jwks)
    (tmp_path / ".hidden.yaml").write_text("garbage: [")
    result = load(source, store)
    assert result.file_errors == []


def test_watcher_applies_a_change_within_a_second(
    tmp_path: Path, es256_jwks: dict[str, Any]
) -> None:
    source, store = _setup(tmp_path, es256_jwks)
    watcher = DirectoryWatcher(source, store, interval=0.1)
    latencies: list[float] = []
    watcher.propagation = latencies.append
    watcher.start()
    try:
        changed = policy_doc(targets={"hosts": ["api.example"]}, rules=[{"name": "changed"}])
        started = time.monotonic()
        write(tmp_path / "api.yaml", changed)
        while _rule_names(store) != ["changed"]:
            assert time.monotonic() - started < 1.0, "change not applied within 1 s"
            time.sleep(0.01)
        time.sleep(0.05)  # the observation follows the swap
        # from the file's mtime: the polling delay is part of what users wait for
        assert len(latencies) == 1 and 0 < latencies[0] < 1.0, latencies
    finally:
        watcher.stop()


def test_hostile_yaml_is_a_file_error_not_a_crash(
    tmp_path: Path, es256_jwks: dict[str, Any]
) -> None:
    """Found by fuzzing: PyYAML raises ValueError/AttributeError for some scalars, aliases can
    make a document refer to itself, and `kind: {}` is unhashable. None may stop a reload."""
    source, store = _setup(tmp_path, es256_jwks)
    hostile = {
        "date.yaml": "a: !!int 0x\n",
        "stamp.yaml": "a: !!timestamp nope\n",
        "alias.yaml": "a: &x [1]\nb: *x\n",
        "deep.yaml": "a: " + "[" * 3000 + "]" * 3000 + "\n",
        "kind.yaml": "apiVersion: authz.io/v1alpha1\nkind: {}\nmetadata: {name: k}\nspec: {}\n",
    }
    for name, text in hostile.items():
        (tmp_path / name).write_text(text)
    result = load(source, store)
    assert len(result.file_errors) == len(hostile), result.file_errors
    assert _rule_names(store) == ["all"] and store.snapshot.version == 2


def test_dates_stay_strings_as_in_kubernetes(tmp_path: Path, es256_jwks: dict[str, Any]) -> None:
    source, store = _setup(tmp_path, es256_jwks)
    doc = policy_doc(
        targets={"hosts": ["api.example"]},
        rules=[{"name": "d", "claims": [{"path": "day", "equals": "2001-02-30"}]}],
    )
    (tmp_path / "api.yaml").write_text(
        json.dumps(doc).replace('"2001-02-30"', "2001-02-30")  # JSON is YAML; unquoted date
    )
    load(source, store)
    assert _rule_names(store) == ["d"], store.statuses


def test_policies_share_their_repeated_strings() -> None:
    """The store keeps every object's document (its last good version), and policies repeat
    keys and values (`paths`, `GET`, scope names) thousands of times: each is held once."""
    text = "\n---\n".join(
        json.dumps(policy_doc(targets={"hosts": [f"svc-{i}.example"]})) for i in range(3)
    )
    first, second, _ = documents(text)
    assert first == json.loads(json.dumps(first))  # the same values as before
    assert all(
        a is b for a, b in zip(first["spec"]["rules"][0], second["spec"]["rules"][0], strict=True)
    )
    assert first["kind"] is second["kind"] and first["apiVersion"] is second["apiVersion"]
