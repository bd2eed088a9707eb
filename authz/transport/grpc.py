"""Envoy's gRPC ext_authz (`envoy.service.auth.v3.Authorization/Check`): CheckRequest in,
CheckResponse out. The only module on the request path that knows protobuf.

The CheckRequest becomes a `RequestView`, the pipeline decides and answers, and the
`Answer` becomes a CheckResponse: allow responses built field by field (on upb several
times cheaper than keyword arguments or Struct.update), denials built once per answer.

grpcio calls the method with the serialized request and sends the bytes it returns: the
request is parsed here (its size bounds the headers for free), and a shared answer's
response is serialized once and its bytes reused. grpcio's own (de)serialisers would do
the same work in Python around every call (docs/performance.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent import futures
from typing import Any

import grpc
import structlog
from envoy.config.core.v3.base_pb2 import HeaderValueOption
from envoy.service.auth.v3 import external_auth_pb2
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from google.protobuf.message import DecodeError
from google.rpc import code_pb2
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from authz.observe.recorder import Recorder
from authz.request.decision import Reason
from authz.request.pipeline import Outcome, Pipeline
from authz.request.respond import Answer
from authz.request.view import (
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    RequestError,
    RequestView,
    check_header_limits,
    request_view,
)

log = structlog.get_logger("authz.server")

SERVICE = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
_GRPC_CODE = {
    302: code_pb2.UNAUTHENTICATED,  # browser sign-in's redirects (the client is sent on)
    400: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    403: code_pb2.PERMISSION_DENIED,
    503: code_pb2.UNAVAILABLE,
}
_OVERWRITE = HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_APPEND = HeaderValueOption.APPEND_IF_EXISTS_OR_ADD  # Set-Cookie: one header per cookie
_MAX_RENDERED = 4096


def request_view_of(check_request: Any, size: int | None = None) -> RequestView:
    """Read the attributes Envoy sends; the fields are protobuf strings, never None.
    Envoy sends `headers` or `header_map` (raw values), never both. `size`: the request's
    serialized size, if known."""
    attrs = check_request.attributes
    http = attrs.request.http
    headers: Mapping[str, str] = http.headers
    count = len(headers) or len(http.header_map.headers)
    # The serialized size bounds every header: walk them only when large.
    if size is None:
        size = http.ByteSize()
    if count > MAX_HEADERS or size > MAX_HEADER_BYTES:
        pairs = [(h.key, h.value or h.raw_value) for h in http.header_map.headers]
        check_header_limits(count, [*http.headers.items(), *pairs])
    if not headers and len(http.header_map.headers):
        joined: dict[str, str] = {}
        headers = joined
        for h in http.header_map.headers:
            value = h.value or h.raw_value.decode("utf-8", "replace")
            key = h.key.lower()
            joined[key] = f"{joined[key]},{value}" if key in joined else value
    authority = http.host or headers.get(":authority", "")
    connection = _Connection(attrs)
    return request_view(
        http.method, authority, http.path, headers, attrs.context_extensions, connection=connection
    )


class _Connection:
    """The CheckRequest's connection attributes, read when asked (most Checks never do:
    nested protobuf reads cost more than the rest of a cache-hit request view), and kept
    once read: several rules may ask for the same one."""

    __slots__ = ("_attrs", "_principal", "_source")

    def __init__(self, attrs: Any) -> None:
        self._attrs = attrs
        self._source: str | None = None
        self._principal: str | None = None

    @property
    def scheme(self) -> str:
        return str(self._attrs.request.http.scheme)

    @property
    def source_address(self) -> str:
        if self._source is None:
            self._source = str(self._attrs.source.address.socket_address.address)
        return self._source

    @property
    def source_port(self) -> int:
        return int(self._attrs.source.address.socket_address.port_value)

    @property
    def destination_port(self) -> int:
        return int(self._attrs.destination.address.socket_address.port_value)

    @property
    def peer_principal(self) -> str:
        if self._principal is None:
            self._principal = str(self._attrs.source.principal)
        return self._principal

    @property
    def peer_certificate(self) -> str:
        return str(self._attrs.source.certificate)


class GrpcChecker:
    """One Check: CheckRequest -> pipeline -> CheckResponse. A shared answer (one the
    responder reuses) is rendered and serialized once (responses are only ever read)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self._rendered: dict[int, tuple[Answer, CheckResponse, bytes]] = {}

    def check(self, check_request: Any) -> tuple[CheckResponse, Outcome]:
        answer, outcome = self.decide(check_request)
        return self.render(answer), outcome

    def decide(self, check_request: Any, size: int | None = None) -> tuple[Answer, Outcome]:
        try:
            view = request_view_of(check_request, size)
        except RequestError as exc:
            return self.pipeline.reject(Reason.REQUEST_INVALID, str(exc))
        return self.pipeline.check(view)

    def render(self, answer: Answer) -> CheckResponse:
        if not answer.shared:
            return _response(answer)
        return self._shared(answer)[1]

    def serialized(self, answer: Answer) -> bytes:
        """The CheckResponse for `answer` on the wire."""
        if not answer.shared:
            return _response(answer).SerializeToString()  # type: ignore[no-any-return]
        return self._shared(answer)[2]

    def _shared(self, answer: Answer) -> tuple[Answer, CheckResponse, bytes]:
        # The memo holds `answer`, so its id cannot be reused while the entry lives.
        memo = self._rendered.get(id(answer))
        if memo is not None and memo[0] is answer:
            return memo
        response = _response(answer)
        memo = (answer, response, response.SerializeToString())
        if len(self._rendered) >= _MAX_RENDERED:
            self._rendered.clear()
        self._rendered[id(answer)] = memo
        return memo


def _response(answer: Answer) -> CheckResponse:
    return _allow(answer) if answer.allowed else _deny(answer)


def _allow(answer: Answer) -> CheckResponse:
    response = CheckResponse()
    response.status.code = code_pb2.OK
    ok = response.ok_response
    ok.SetInParent()
    for name, value in answer.headers:
        option = ok.headers.add()
        option.header.key = name
        option.header.value = value
        option.append_action = _OVERWRITE
    ok.headers_to_remove.extend(answer.remove)
    for name, value in answer.response_headers:  # to the client: a renewed session cookie
        option = ok.response_headers_to_add.add()
        option.header.key = name
        option.header.value = value
        option.append_action = _APPEND
    if answer.remove_query:
        ok.query_parameters_to_remove.extend(answer.remove_query)
    if answer.metadata:
        fields = response.dynamic_metadata.fields
        for key, entry in answer.metadata:
            if isinstance(entry, str):
                fields[key].string_value = entry
            else:
                values = fields[key].list_value
                values.SetInParent()
                for item in entry:
                    values.values.add().string_value = item
    return response


def _deny(answer: Answer) -> CheckResponse:
    response = CheckResponse()
    # A policy's custom answer (denyWith) may have another status: still a denial.
    response.status.code = _GRPC_CODE.get(answer.status, code_pb2.PERMISSION_DENIED)
    response.status.message = answer.reason
    denied = response.denied_response
    denied.status.code = answer.status
    for name, value in answer.headers:
        option = denied.headers.add()
        option.header.key = name
        option.header.value = value
        option.append_action = _APPEND if name == "set-cookie" else _OVERWRITE
    denied.body = answer.body
    return response


class AuthorizationService:
    """The Check method as grpcio calls it: the serialized CheckRequest in, the serialized
    CheckResponse out."""

    def __init__(self, checker: GrpcChecker, recorder: Recorder) -> None:
        self._checker = checker
        self._recorder = recorder

    def Check(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        started = time.perf_counter()
        try:
            request = CheckRequest.FromString(raw)
        except DecodeError:  # what grpcio answers when its own deserializer fails
            context.abort(grpc.StatusCode.INTERNAL, "Exception deserializing request!")
        checker = self._checker
        try:
            answer, outcome = checker.decide(request, len(raw))
            response = checker.serialized(answer)
        except Exception:  # fail closed: a bug denies the request, never opens it
            log.exception("check failed; denying")
            answer, outcome = checker.pipeline.reject(Reason.INTERNAL_ERROR, "")
            response = checker.serialized(answer)
        seconds = time.perf_counter() - started
        headers = outcome.request.headers if outcome.request else _headers(request)
        self._recorder.record(outcome, seconds, headers)
        return response


def _headers(request: Any) -> Mapping[str, str]:
    return request.attributes.request.http.headers  # type: ignore[no-any-return]


class _MeasuredPool(futures.ThreadPoolExecutor):
    """The handler threads, timing how long each RPC waits in the queue for one: the
    overload signal (all threads busy) that the handler's own duration cannot show."""

    def __init__(self, observe: Callable[[float], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._observe = observe

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        queued = time.perf_counter()
        observe = self._observe

        def timed() -> Any:
            observe(time.perf_counter() - queued)
            return fn(*args, **kwargs)

        return super().submit(timed)


def grpc_server(
    checker: GrpcChecker,
    addr: str,
    recorder: Recorder,
    threads: int = 16,
    *,
    reuse_port: bool = False,
    credentials: grpc.ServerCredentials | None = None,
    queue_wait: Callable[[float], None] | None = None,
) -> tuple[grpc.Server, health.HealthServicer, int]:
    """The Check service with gRPC health and reflection, bound but not started.
    SO_REUSEPORT only for `--workers`: otherwise a second instance must fail to bind.
    With `credentials` (authz.tls) the port speaks TLS only; `queue_wait` is told how long
    each RPC waited for a handler thread."""
    pool = (
        _MeasuredPool(queue_wait, max_workers=threads, thread_name_prefix="check")
        if queue_wait is not None
        else futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="check")
    )
    server = grpc.server(
        pool,
        options=[("grpc.so_reuseport", 1 if reuse_port else 0)],
    )
    check = grpc.unary_unary_rpc_method_handler(AuthorizationService(checker, recorder).Check)
    handlers = {"Check": check}  # no (de)serializers: Check takes and returns bytes
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    # A registered method skips the generic handler lookup per call (grpcio >= 1.62; the
    # grpc-stubs do not know it yet).
    server.add_registered_method_handlers(SERVICE, handlers)  # type: ignore[attr-defined]
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = add_port(server, addr, credentials)
    if port == 0 and not addr.startswith("unix:"):
        raise OSError(f"cannot listen on {addr}")
    return server, health_servicer, port


def add_port(server: grpc.Server, addr: str, credentials: grpc.ServerCredentials | None) -> int:
    """Bind one more port: TLS with `credentials`, else plaintext; OSError if it cannot."""
    try:
        if credentials is None:
            return server.add_insecure_port(addr)
        return server.add_secure_port(addr, credentials)
    except RuntimeError:  # grpcio's "Failed to bind to address ..."
        raise OSError(f"cannot listen on {addr}") from None
