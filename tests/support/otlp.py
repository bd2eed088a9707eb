"""An OTLP/gRPC trace receiver on 127.0.0.1, in this process, built from the
opentelemetry-proto stubs the exporter itself uses: what a collector's otlp receiver
does with an ExportTraceServiceRequest, minus the pipeline. Tests read the spans.

    with OtlpReceiver() as otlp:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint, "OTEL_EXPORTER_OTLP_INSECURE": "true"}
        ...
        span = otlp.wait_for(lambda s: s.name == "authz.check")
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tests.support.served import ClosedOnExit


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str  # 32 hex
    span_id: str  # 16 hex
    parent_span_id: str  # 16 hex, "" for a root span
    kind: int
    attributes: dict[str, Any]
    service_name: str


def _value(any_value: Any) -> Any:
    field = any_value.WhichOneof("value")
    return getattr(any_value, field) if field else None


class _Service(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.lock = threading.Lock()

    def Export(self, request: Any, context: Any) -> Any:
        received = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            kind=span.kind,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            service_name=str(resource.get("service.name", "")),
                        )
                    )
        with self.lock:
            self.spans.extend(received)
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver(ClosedOnExit):
    def __init__(self) -> None:
        self._service = _Service()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self._service, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server.start()

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._service.lock:
            return list(self._service.spans)

    def wait_for(
        self, predicate: Callable[[ReceivedSpan], bool], timeout: float = 10
    ) -> ReceivedSpan:
        deadline = time.monotonic() + timeout
        while True:
            found = [s for s in self.spans if predicate(s)]
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no such span within {timeout}s; received {self.spans}")
            time.sleep(0.05)

    def close(self) -> None:
        self._server.stop(grace=None)
