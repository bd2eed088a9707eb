"""Optional OpenTelemetry tracing: one span per Check, continuing the caller's trace
(W3C traceparent, or B3 when that is what the mesh propagates).

Off by default (`authz serve --tracing` turns it on). The OpenTelemetry packages are an
optional extra (`pip install 'authz[otel]'`) imported only here and only when tracing is
on, so a server without it pays one `is None` test per Check. The span is recorded after
the decision with the Check's own start and end times: tracing never delays a decision
and a tracing failure cannot change one. Exporting is configured the standard way,
through the `OTEL_*` environment variables (endpoint, headers, sampler, service name).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from authz.observe.correlation import trace_parent
from authz.request.decision import Reason
from authz.request.pipeline import Outcome
from authz.request.respond import http_status

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

_INSTALL_HINT = "tracing needs the OpenTelemetry packages: pip install 'authz[otel]'"
_PROTO_HINT = (
    "the OTLP exporter cannot import opentelemetry.proto: the installed copy is the older "
    "one xds-protos ships (installed after opentelemetry-proto, it overwrote its files). "
    "Reinstall it: pip install --force-reinstall --no-deps opentelemetry-proto=={version}"
)


def import_problem(exc: ImportError) -> str:
    """What to do about an ImportError of the exporter: install the extra, or repair the
    opentelemetry/proto files xds-protos overwrote (the packages are there, but old)."""
    from importlib import metadata

    module = exc.name or ""
    if module.startswith("opentelemetry.proto") or "opentelemetry.proto" in str(exc):
        try:
            version = metadata.version("opentelemetry-proto")
        except metadata.PackageNotFoundError:
            return f"{_INSTALL_HINT} ({exc})"
        return f"{_PROTO_HINT.format(version=version)} ({exc})"
    return f"{_INSTALL_HINT} ({exc})"


class Tracing:
    """Turns Check outcomes into spans on `provider`, parented by the request's traceparent."""

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._provider = provider
        self._tracer = provider.get_tracer("authz")
        self._propagator = TraceContextTextMapPropagator()
        self._server_kind = trace.SpanKind.SERVER
        self._error = trace.Status(trace.StatusCode.ERROR)
        self._trace = trace

    def record(
        self, headers: Mapping[str, str], outcome: Outcome, start_ns: int, end_ns: int
    ) -> None:
        """One `authz.check` span from start_ns to end_ns with the decision as attributes."""
        parent = self._parent(headers)
        span = self._tracer.start_span(
            "authz.check",
            context=parent,
            kind=self._server_kind,
            start_time=start_ns,
            attributes=_attributes(outcome),
        )
        if outcome.decision.reason == Reason.INTERNAL_ERROR:
            span.set_status(self._error)
        span.end(end_time=end_ns)

    def _parent(self, headers: Mapping[str, str]) -> Any:
        """W3C through OpenTelemetry's propagator (tracestate kept); else B3 ids as the
        remote parent; else no parent (a new trace)."""
        caller = trace_parent(headers)
        if caller is None or caller.format == "w3c":
            return self._propagator.extract(carrier=headers)
        trace = self._trace
        flags = trace.TraceFlags(trace.TraceFlags.SAMPLED if caller.sampled else 0)
        context = trace.SpanContext(
            int(caller.trace_id, 16), int(caller.span_id, 16), is_remote=True, trace_flags=flags
        )
        return trace.set_span_in_context(trace.NonRecordingSpan(context))

    def shutdown(self) -> None:
        """Flush spans still queued for export."""
        self._provider.shutdown()


def _attributes(outcome: Outcome) -> dict[str, Any]:
    decision = outcome.decision
    out: dict[str, Any] = {
        "authz.decision": "allow" if decision.allowed else "deny",
        "authz.reason": decision.reason.value,
        "authz.snapshot": outcome.snapshot_version,
        "http.response.status_code": http_status(decision),
    }
    if decision.policy:
        out["authz.policy"] = decision.policy
    if decision.rule:
        out["authz.rule"] = decision.rule
    if outcome.would_deny is not None:
        out["authz.dry_run"] = True
        out["authz.would_deny"] = outcome.would_deny.reason.value
    if outcome.request is not None:
        out["http.request.method"] = outcome.request.method
        out["server.address"] = outcome.request.host
        out["url.path"] = outcome.request.path
    if outcome.verified is not None:
        out["authz.issuer"] = outcome.verified.issuer.id
    return out


def from_environment() -> Tracing:
    """A batching OTLP/gRPC exporter configured by the standard OTEL_* variables."""
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise SystemExit(f"authz serve --tracing: {import_problem(exc)}") from None
    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "authz"}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return Tracing(provider)
