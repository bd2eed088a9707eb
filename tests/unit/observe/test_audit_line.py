"""The audit line is assembled from kept parts; a reader must see exactly the line the fields
render to at once (same fields, order and bytes), whatever the decision and claims."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry

from authz.observe import logs
from authz.observe.audit import Audit, fields
from authz.observe.metrics import Metrics
from authz.request.assembly import pipeline
from authz.request.cache import TokenCache
from authz.request.decision import Reason
from authz.request.pipeline import Outcome
from tests.support.docs import issuer, policy, rule
from tests.support.snapshots import bearer_token, check, serve

SERVED = serve(
    issuer(),
    policy(
        rules=[
            rule("read", paths=["/read/**"], requireScopes={"allOf": ["r"]}),
            rule("open", paths=["/open"], action="allowAnonymous"),
        ]
    ),
)
DRY = serve(issuer(), policy(rules=[rule("read", requireScopes={"allOf": ["r"]})], dryRun=True))


def outcomes() -> Iterator[tuple[str, Outcome]]:
    weird = 'a\u2028b\u2029c\u0085"\\\n\x00é'
    yield "allow", check(SERVED, path="/read/1", token=bearer_token(scope="r", jti="j1"))[1]
    yield "anonymous", check(SERVED, path="/open")[1]
    yield "missing", check(SERVED, path="/read/1")[1]
    yield "scope", check(SERVED, path="/read/1", token=bearer_token(scope="x"))[1]
    yield "expired", check(SERVED, path="/read/1", token=bearer_token(exp=1))[1]
    yield "dry run", check(DRY, path="/x", token=bearer_token(scope="x"))[1]
    yield (
        "odd claims",
        check(
            SERVED,
            path="/read/" + weird,
            host="API.example",
            token=bearer_token(scope="r", sub=weird, jti="x" * 300, aud=["api", "t" * 300]),
        )[1],
    )
    kept, token = TokenCache(), bearer_token(scope="r", jti="j2")
    check(SERVED, path="/read/1", token=token, cache=kept)  # verified, cached, hot
    again = check(SERVED, path="/read/1", token=token, cache=kept)[1]  # fields kept per token
    assert again.authentication is not None and again.authentication.reused
    yield "allow, token kept", again
    rejected = pipeline(SERVED, TokenCache(0)).reject(Reason.REQUEST_INVALID, "bad \u2028 path")
    yield "no request", rejected[1]  # never got a view: no request fields
    yield "no policy", check(serve(issuer()), path="/read/1")[1]


@pytest.fixture
def json_logs(capfd: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    """JSON lines to what `capfd` captures (the sink writes to stdout's file descriptor);
    afterwards the defaults other tests expect."""
    logs.configure("info")
    yield capfd
    logs._AUDIT.sink.drain()  # type: ignore[union-attr]
    structlog.reset_defaults()
    logs._AUDIT.sink, logs._AUDIT.enabled = None, True


CASES = list(outcomes())


@pytest.mark.parametrize(("name", "outcome"), CASES, ids=[c[0] for c in CASES])
def test_kept_parts_make_the_same_line(
    name: str, outcome: Outcome, json_logs: pytest.CaptureFixture[str]
) -> None:
    audit = Audit(Metrics(CollectorRegistry()))
    assert logs.audit_rendered()
    for _ in range(2):  # the second line is made of kept parts
        audit.record(outcome, 0.0012345)
    logs._AUDIT.sink.drain()  # type: ignore[union-attr]
    lines = json_logs.readouterr().out.splitlines()[-2:]
    expected = logs._one_line({"event": "decision", **fields(outcome, 0.0012345)})
    for line in lines:
        raw = line.encode()
        members, _, tail = raw.rpartition(b',"level":"info","timestamp":"')
        assert members + b"}" == expected
        assert tail.endswith(b'Z"}')
        assert "\u2028" not in line and "\u0085" not in line
    parsed: dict[str, Any] = json.loads(lines[0])
    assert next(iter(parsed)) == "event" and list(parsed)[-2:] == ["level", "timestamp"]


def test_without_the_json_sink_structlog_gets_the_same_fields() -> None:
    """Console output (`--log-format console`) goes through structlog's processors."""
    assert not logs.audit_rendered()
    outcome = CASES[0][1]
    with structlog.testing.capture_logs() as captured:
        Audit(Metrics(CollectorRegistry())).record(outcome, 0.001)
    assert captured[0] == {"event": "decision", "log_level": "info", **fields(outcome, 0.001)}


def test_a_new_snapshot_version_is_a_new_line_head(
    json_logs: pytest.CaptureFixture[str],
) -> None:
    audit = Audit(Metrics(CollectorRegistry()))
    outcome = CASES[0][1]
    audit.record(outcome, 0.001)
    audit.record(Outcome(**{**_as_dict(outcome), "snapshot_version": 99}), 0.001)
    logs._AUDIT.sink.drain()  # type: ignore[union-attr]
    lines = json_logs.readouterr().out.splitlines()[-2:]
    first, second = (json.loads(line) for line in lines)
    assert (first["snapshot"], second["snapshot"]) == (outcome.snapshot_version, 99)


def _as_dict(outcome: Outcome) -> dict[str, Any]:
    return {name: getattr(outcome, name) for name in Outcome.__dataclass_fields__}


TRACE, SPAN = "a" * 32, "b" * 16
CORRELATED = [
    (
        {"x-request-id": "r-1", "traceparent": f"00-{TRACE}-{SPAN}-01"},
        {"request_id": "r-1", "trace_id": TRACE, "parent_span_id": SPAN},
    ),
    (
        {"b3": f"{TRACE}-{SPAN}-1"},
        {"trace_id": TRACE, "parent_span_id": SPAN, "trace_format": "b3"},
    ),
    ({"x-request-id": "not an id"}, {}),  # not well formed: left out, never logged
    ({}, {}),
]
NAMES = ("request_id", "trace_id", "parent_span_id", "trace_format")


@pytest.mark.parametrize(("headers", "ids"), CORRELATED)
def test_the_correlation_ids_are_in_the_kept_parts_line_too(
    headers: dict[str, str], ids: dict[str, str], json_logs: pytest.CaptureFixture[str]
) -> None:
    """request_id, trace_id, parent_span_id and trace_format, where `fields` puts them."""
    audit = Audit(Metrics(CollectorRegistry()))
    outcome = CASES[0][1]
    for _ in range(2):
        audit.record(outcome, 0.001, headers)
    logs._AUDIT.sink.drain()  # type: ignore[union-attr]
    lines = json_logs.readouterr().out.splitlines()[-2:]
    expected = logs._one_line({"event": "decision", **fields(outcome, 0.001, headers)})
    for line in lines:
        members = line.encode().rpartition(b',"level":"info","timestamp":"')[0]
        assert members + b"}" == expected
        parsed = json.loads(line)
        assert {k: parsed[k] for k in NAMES if k in parsed} == ids
