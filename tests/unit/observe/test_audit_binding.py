"""The audit line says what proved the caller holds a key-bound token, never the proof."""

from __future__ import annotations

import json

import structlog
from prometheus_client import CollectorRegistry

from authz.observe.audit import Audit
from authz.observe.metrics import Metrics
from tests.support.docs import issuer, policy
from tests.support.dpop import DPoPClient
from tests.support.snapshots import bearer_token, check, serve


def test_a_dpop_decision_names_its_binding() -> None:
    client = DPoPClient()
    token = bearer_token(cnf={"jkt": client.jkt})
    headers = client.headers(token, htu="https://api.example/x")
    _, outcome = check(serve(issuer(), policy(dpop={})), path="/x", headers=headers)
    _, bearer = check(serve(issuer(), policy()), path="/x", token=bearer_token())
    audit = Audit(Metrics(CollectorRegistry()))
    with structlog.testing.capture_logs() as lines:
        audit.record(outcome, 0.001)
        audit.record(bearer, 0.001)
    assert lines[0]["binding"] == "dpop" and lines[0]["decision"] == "allow"
    assert "binding" not in lines[1]
    text = json.dumps(lines, default=str)
    assert headers["dpop"] not in text and token not in text
