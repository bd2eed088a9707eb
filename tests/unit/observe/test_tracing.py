"""OpenTelemetry tracing: a span per Check continuing the caller's W3C trace; nothing when off."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from authz.observe import tracing
from tests.support.authz import CheckClient, check_server
from tests.support.tokens import ISSUER, NOW, mint, signing_key

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
DOCS: list[dict[str, Any]] = [
    {
        "apiVersion": "authz.io/v1alpha1",
        "kind": "JWTIssuer",
        "metadata": {"name": "idp", "namespace": "t"},
        "spec": {"issuer": ISSUER, "jwks": {"keys": [signing_key("ES256")[1]]}},
    },
    {
        "apiVersion": "authz.io/v1alpha1",
        "kind": "AuthzPolicy",
        "metadata": {"name": "api", "namespace": "t"},
        "spec": {
            "targets": {"hosts": ["api.test"]},
            "issuers": [{"name": "idp"}],
            "audiences": ["api"],
            "rules": [{"name": "all"}],
        },
    },
]


@pytest.fixture(scope="module")
def traced(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[CheckClient, InMemorySpanExporter]]:
    directory = tmp_path_factory.mktemp("tracing")
    (directory / "policies.yaml").write_text(yaml.safe_dump_all(DOCS))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with check_server(directory, tracer=tracing.Tracing(provider), clock=lambda: NOW) as client:
        yield client, exporter
    provider.shutdown()


def one_span(exporter: InMemorySpanExporter) -> Any:
    spans = exporter.get_finished_spans()
    exporter.clear()
    assert len(spans) == 1
    return spans[0]


def test_span_continues_the_traceparent(traced: tuple[CheckClient, InMemorySpanExporter]) -> None:
    client, exporter = traced
    headers = {
        "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
        "authorization": f"Bearer {mint(signing_key('ES256')[0])}",
    }
    assert client.check(headers=headers, host="api.test", path="/orders?x=1").status.code == 0
    span = one_span(exporter)
    assert span.name == "authz.check" and span.kind.name == "SERVER"
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_ID
    assert dict(span.attributes) == {
        "authz.decision": "allow",
        "authz.reason": "allowed",
        "authz.snapshot": 1,
        "http.response.status_code": 200,
        "authz.policy": "AuthzPolicy/t/api",
        "authz.rule": "all",
        "http.request.method": "GET",
        "server.address": "api.test",
        "url.path": "/orders",
        "authz.issuer": "JWTIssuer/t/idp",
    }
    assert span.end_time > span.start_time


def test_a_denial_without_traceparent_starts_a_trace(
    traced: tuple[CheckClient, InMemorySpanExporter],
) -> None:
    client, exporter = traced
    response = client.check(headers={"authorization": "Bearer x.y.z"}, host="api.test")
    assert response.denied_response.status.code == 401
    span = one_span(exporter)
    assert span.parent is None
    assert span.attributes["authz.reason"] == "token_malformed"
    assert span.attributes["http.response.status_code"] == 401


def test_an_invalid_request_is_traced_too(
    traced: tuple[CheckClient, InMemorySpanExporter],
) -> None:
    client, exporter = traced
    headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
    assert client.check(headers=headers, path="").denied_response.status.code == 400
    span = one_span(exporter)
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.attributes["authz.reason"] == "request_invalid"


def test_off_means_not_even_imported() -> None:
    code = "import sys, authz.server, authz.cli; print(any(m.startswith('opentelemetry') for m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.stdout.strip() == "False"


@pytest.mark.skipif(
    importlib.util.find_spec("opentelemetry.exporter") is not None,
    reason="the authz[otel] extra is installed",
)
def test_without_the_extra_the_flag_says_what_to_install() -> None:
    with pytest.raises(SystemExit, match=r"pip install 'authz\[otel\]'"):
        tracing.from_environment()


@pytest.mark.parametrize(
    "trace_headers",
    [
        {"b3": f"{TRACE_ID[16:]}-{PARENT_ID}-1"},
        {"x-b3-traceid": TRACE_ID, "x-b3-spanid": PARENT_ID, "x-b3-sampled": "1"},
    ],
)
def test_span_continues_a_b3_trace(
    traced: tuple[CheckClient, InMemorySpanExporter], trace_headers: dict[str, str]
) -> None:
    """Istio meshes propagate B3; a 64-bit trace id is left-padded, as Zipkin does."""
    client, exporter = traced
    headers = {**trace_headers, "authorization": f"Bearer {mint(signing_key('ES256')[0])}"}
    assert client.check(headers=headers, host="api.test").status.code == 0
    span = one_span(exporter)
    expected = TRACE_ID if "x-b3-traceid" in trace_headers else "0" * 16 + TRACE_ID[16:]
    assert format(span.context.trace_id, "032x") == expected
    assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_ID
    assert span.parent.is_remote


def test_xds_protos_overwriting_opentelemetry_proto_is_named() -> None:
    """xds-protos ships an older opentelemetry/proto; installed after opentelemetry-proto it
    overwrites the exporter's files, and `--tracing` then fails on an import. The shared
    venv must not be broken for this, so the stale module is stood in for in a child
    process: a common_pb2 without InstrumentationScope, as xds-protos' copy is."""
    code = (
        "import sys, types\n"
        "stale = types.ModuleType('opentelemetry.proto.common.v1.common_pb2')\n"
        "stale.AnyValue = stale.KeyValue = object\n"
        "sys.modules['opentelemetry.proto.common.v1.common_pb2'] = stale\n"
        "from authz.observe import tracing\n"
        "tracing.from_environment()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert result.returncode == 1
    assert "the installed copy is the older one xds-protos ships" in result.stderr
    assert "pip install --force-reinstall --no-deps opentelemetry-proto==" in result.stderr
    assert "cannot import name" in result.stderr
