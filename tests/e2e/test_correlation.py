"""Correlation with real parts: Envoy in front of `authz serve --tracing`, exporting by OTLP
to a receiver this test starts (tests/support/otlp.py). The audit line carries Envoy's
x-request-id and the caller's trace ids, W3C or B3, and the exported span continues that
trace. And the queue-wait histogram shows Checks waiting for a handler thread."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from authz.devtools import mint_token
from tests.e2e.conftest import EnvoyStack, start_envoy_stack
from tests.support.authz import check_server
from tests.support.keyserver import KeyServer
from tests.support.otlp import OtlpReceiver
from tests.support.tokens import signing_key

ISS = "https://static.example"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def _token(iss: str = ISS, kid: str = "k1") -> str:
    now = int(time.time())
    claims = {"iss": iss, "sub": "alice", "aud": "orders", "iat": now, "exp": now + 300}
    return mint_token(signing_key("ES256", kid)[0], claims)


def _policies(directory: Path, **issuer_spec: Any) -> Path:
    spec = issuer_spec or {"jwks": {"keys": [signing_key("ES256", "k1")[1]]}}
    docs = [
        {
            "apiVersion": "authz.io/v1alpha1",
            "kind": "JWTIssuer",
            "metadata": {"name": "idp", "namespace": "default"},
            "spec": {"issuer": ISS, "algorithms": ["ES256"], **spec},
        },
        {
            "apiVersion": "authz.io/v1alpha1",
            "kind": "AuthzPolicy",
            "metadata": {"name": "orders", "namespace": "default"},
            "spec": {
                "targets": {"hosts": ["*"]},
                "issuers": [{"name": "idp"}],
                "audiences": ["orders"],
                "rules": [{"name": "orders"}],
            },
        },
    ]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "policies.yaml").write_text(yaml.safe_dump_all(docs))
    return directory


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EnvoyStack, OtlpReceiver]]:
    policies = _policies(tmp_path_factory.mktemp("correlation"))
    with ExitStack() as stack, OtlpReceiver() as otlp:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_SERVICE_NAME": "authz-e2e",
        }
        yield start_envoy_stack(stack, policies, authz_args=["--tracing"], authz_env=env), otlp


def audit_line(stack: EnvoyStack, request_id: str, timeout: float = 3) -> dict[str, Any]:
    """The decision line for this request id (the log is flushed every 200 ms)."""
    deadline = time.monotonic() + timeout
    while True:
        for line in stack.authz.process.tail(400).splitlines():
            if request_id in line and line.startswith("{"):
                doc: dict[str, Any] = json.loads(line)
                if doc.get("event") == "decision":
                    return doc
        assert time.monotonic() < deadline, f"no audit line with request_id {request_id}"
        time.sleep(0.1)


def test_w3c_trace_and_request_id(traced: tuple[EnvoyStack, OtlpReceiver]) -> None:
    stack, otlp = traced
    response = stack.get("/orders/1", token=_token(), traceparent=f"00-{TRACE_ID}-{PARENT_ID}-01")
    assert response.status == 200
    request_id = response.upstream_headers["x-request-id"]  # Envoy made it
    line = audit_line(stack, request_id)
    assert line["request_id"] == request_id
    assert (line["trace_id"], line["parent_span_id"]) == (TRACE_ID, PARENT_ID)
    assert "trace_format" not in line
    span = otlp.wait_for(lambda s: s.trace_id == TRACE_ID)
    assert (span.name, span.parent_span_id, span.service_name) == (
        "authz.check",
        PARENT_ID,
        "authz-e2e",
    )
    assert span.attributes["authz.decision"] == "allow"
    assert span.attributes["authz.policy"] == "AuthzPolicy/default/orders"


@pytest.mark.parametrize(
    "headers",
    [
        {
            "x_b3_traceid": "a3ce929d0e0e4736",
            "x_b3_spanid": "00f067aa0ba902b8",
            "x_b3_sampled": "1",
        },
        {"b3": "a3ce929d0e0e4736-00f067aa0ba902b8-1-05e3ac9a4f6e3b90"},
    ],
)
def test_b3_from_the_mesh(traced: tuple[EnvoyStack, OtlpReceiver], headers: dict[str, str]) -> None:
    """Istio's default: 64-bit B3 trace ids, which are left-padded to 128 bits."""
    stack, otlp = traced
    response = stack.get("/orders/2", token=_token(), **headers)
    assert response.status == 200
    line = audit_line(stack, response.upstream_headers["x-request-id"])
    padded = "0000000000000000a3ce929d0e0e4736"
    assert (line["trace_id"], line["parent_span_id"], line["trace_format"]) == (
        padded,
        "00f067aa0ba902b8",
        "b3",
    )
    span = otlp.wait_for(lambda s: s.trace_id == padded and s.parent_span_id == "00f067aa0ba902b8")
    assert span.attributes["authz.reason"] == "allowed"


def _queue_samples(metrics: Any) -> tuple[float, list[tuple[float, float]]]:
    """(count, [(le, cumulative count)]) of authz_check_queue_seconds{transport="grpc"}."""
    text = metrics.exposition().decode()
    buckets: list[tuple[float, float]] = []
    count = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "authz_check_queue_seconds":
            continue
        for sample in family.samples:
            if sample.labels.get("transport") != "grpc":
                continue
            if sample.name.endswith("_bucket"):
                buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name.endswith("_count"):
                count = sample.value
    return count, buckets


def test_checks_waiting_for_a_handler_thread_show_in_the_queue_histogram(tmp_path: Path) -> None:
    """One handler thread, held by a Check waiting for a slow key server (an unknown kid):
    the next Check waits in the queue, and the histogram says so."""
    with KeyServer() as server:
        server.json("/jwks", {"keys": [signing_key("ES256", "k1")[1]]})
        policies = _policies(
            tmp_path,
            jwksUri=f"{server.url}/jwks",
            fetch={"allowInsecureHttp": True, "unknownKidWaitMillis": 1500},
        )
        with check_server(policies, threads=1) as client:
            deadline = time.monotonic() + 10
            while client.check(headers={"authorization": f"Bearer {_token()}"}).status.code != 0:
                assert time.monotonic() < deadline, "keys never loaded"
                time.sleep(0.1)
            count_before, _ = _queue_samples(client.metrics)
            server.fault("/jwks", delay=3)  # the refetch for the unknown kid hangs
            slow = threading.Thread(
                target=client.check,
                kwargs={"headers": {"authorization": f"Bearer {_token(kid='k9')}"}},
            )
            slow.start()
            time.sleep(0.3)  # the slow Check holds the only thread
            started = time.monotonic()
            assert client.check(headers={"authorization": f"Bearer {_token()}"}).status.code == 0
            waited = time.monotonic() - started
            slow.join()
        count, buckets = _queue_samples(client.metrics)
    assert count == count_before + 2
    within_quarter_second = dict(buckets)[0.25]
    assert count - within_quarter_second >= 1, (buckets, waited)  # one waited > 0.25 s
    assert waited > 0.25
