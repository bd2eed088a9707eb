"""Revocation before expiry over the Check API: entries by jti, subject and issuer, cached
tokens included, and entries that lapse on their own."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from authz.request.cache import TokenCache
from tests.support.docs import document, issuer, policy
from tests.support.snapshots import bearer_token, check, serve, serve_sources
from tests.support.tokens import DROP, ISSUER, NOW


def at(seconds: float) -> str:
    """An RFC 3339 time `seconds` after the test's NOW."""
    return (
        datetime.datetime.fromtimestamp(NOW + seconds, datetime.UTC)
        .isoformat()
        .replace("+00:00", "Z")
    )


def revocation(*entries: dict[str, Any], name: str = "incident", **spec: Any) -> dict[str, Any]:
    return document("TokenRevocation", name, {"entries": list(entries), **spec}, namespace=None)


def status(docs: list[dict[str, Any]], token: str, **options: Any) -> tuple[int, str]:
    answer, outcome = check(serve(*docs), token=token, **options)
    return answer.status, outcome.decision.reason.value


BASE = [issuer(), policy()]


@pytest.mark.parametrize(
    ("entry", "claims", "revoked"),
    [
        ({"jti": "j-1", "issuedBefore": at(0)}, {"jti": "j-1"}, True),
        ({"jti": "j-1", "expiresAt": at(300)}, {"jti": "j-1"}, True),
        ({"jti": "j-1", "expiresAt": at(300)}, {"jti": "j-2"}, False),
        ({"jti": "j-1", "issuer": ISSUER, "expiresAt": at(300)}, {"jti": "j-1"}, True),
        (
            {"jti": "j-1", "issuer": "https://other.test", "expiresAt": at(300)},
            {"jti": "j-1"},
            False,
        ),
        ({"subject": "alice", "issuedBefore": at(1)}, {}, True),
        ({"subject": "alice", "issuedBefore": at(0)}, {}, False),  # issued at NOW: not before
        ({"subject": "alice", "issuedBefore": at(1)}, {"iat": NOW + 5}, False),  # a fresh token
        ({"subject": "alice", "issuedBefore": at(1)}, {"iat": DROP}, True),  # cannot tell
        ({"subject": "bob", "issuedBefore": at(1)}, {}, False),
        ({"subject": "alice", "issuer": ISSUER, "issuedBefore": at(1)}, {}, True),
        ({"issuer": ISSUER, "issuedBefore": at(1)}, {}, True),
        ({"issuer": "https://other.test", "issuedBefore": at(1)}, {}, False),
    ],
)
def test_entries_match_as_written(
    entry: dict[str, Any], claims: dict[str, Any], revoked: bool
) -> None:
    token = bearer_token(**claims)
    expected = (401, "token_revoked") if revoked else (200, "allowed")
    assert status([*BASE, revocation(entry)], token) == expected


def test_a_revoked_token_is_refused_even_when_cached() -> None:
    cache = TokenCache()
    token = bearer_token(jti="j-7")
    before = serve(*BASE)
    assert check(before, token=token, cache=cache)[0].status == 200
    assert len(cache) == 1
    docs = [*BASE, revocation({"jti": "j-7", "expiresAt": at(300)})]
    after = serve_sources(docs, previous=before)  # the issuer is kept: so is its cached token
    answer, outcome = check(after, token=token, cache=cache)
    assert (answer.status, outcome.decision.reason) == (401, "token_revoked")
    assert cache.hits == 1  # decided on the cached token, not by verifying it again
    assert dict(answer.headers)["www-authenticate"] == (
        'Bearer realm="authz", error="invalid_token", '
        'error_description="the token has been revoked"'
    )
    assert "TokenRevocation/incident entries[0]" in outcome.decision.detail
    assert outcome.verified is not None  # the audit line still names iss, sub and jti


def test_entries_lapse_once_no_token_they_match_can_be_valid() -> None:
    """issuedBefore + maxTokenLifetimeSeconds + 10 minutes; expiresAt + 10 minutes."""
    lapsing = revocation(
        {"subject": "alice", "issuedBefore": at(1)},
        {"jti": "j-9", "expiresAt": at(100)},
        maxTokenLifetimeSeconds=3600,
    )
    token = bearer_token(jti="j-9", exp=NOW + 100_000)
    assert status([*BASE, lapsing], token) == (401, "token_revoked")
    assert status([*BASE, lapsing], token, now=NOW + 3600 + 600) == (401, "token_revoked")
    assert status([*BASE, lapsing], token, now=NOW + 3601 + 600) == (200, "allowed")
    revocations = serve(*BASE, lapsing).snapshot.revocations.lists["TokenRevocation/incident"]
    assert revocations.counts(NOW) == (2, 0)
    assert revocations.counts(NOW + 700) == (1, 1)
    assert revocations.counts(NOW + 5000) == (0, 2)


def test_an_invalid_edit_keeps_the_last_good_list() -> None:
    from authz.introspection.manager import IntrospectionManager
    from authz.keys.remote import KeyManager
    from authz.policy.build import LastGood, build
    from authz.policy.validate import validate_document

    good = validate_document(revocation({"subject": "alice", "issuedBefore": at(1)}), "m")
    bad = validate_document(revocation({"subject": "alice", "issuedBefore": "yesterday"}), "m")
    common = {"keys": KeyManager(start=False), "workload_labels": {}, "introspection": IntrospectionManager(), "now": NOW}  # fmt: skip
    first = build([good], {}, last_good=LastGood(), version=1, **common)
    second = build([bad], {}, last_good=first.last_good, version=2, **common)
    status_ = second.statuses["TokenRevocation/incident"]
    assert not status_.accepted and status_.serving
    assert "not an RFC 3339 time" in status_.problems[0]
    assert second.snapshot.revocations.by_subject["alice"]


def test_revocation_applies_to_dry_run_policies_as_a_would_deny() -> None:
    docs = [issuer(), policy(dryRun=True), revocation({"subject": "alice", "issuedBefore": at(1)})]
    answer, outcome = check(serve(*docs), token=bearer_token())
    assert answer.status == 200 and outcome.would_deny is not None
    assert outcome.would_deny.reason == "token_revoked"
    assert "x-auth-subject" not in dict(answer.headers)


def test_no_lists_cost_nothing() -> None:
    assert not serve(*BASE).snapshot.revocations
    assert not serve(*BASE, revocation()).snapshot.revocations
