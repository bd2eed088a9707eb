"""An authz Check server in this process, on a free loopback port, for tests that speak gRPC,
and the same Check without a server (`grpc_checker`) for tests that call it directly."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from prometheus_client import CollectorRegistry

from authz.observe.audit import Audit
from authz.observe.metrics import Metrics
from authz.observe.recorder import Recorder
from authz.policy.files import DirectorySource, load
from authz.policy.store import PolicyStore
from authz.request.assembly import pipeline
from authz.request.cache import TokenCache
from authz.request.pipeline import Serving
from authz.server import policy_store
from authz.transport.grpc import GrpcChecker, grpc_server


def grpc_checker(
    serving: Serving, *, cache: TokenCache | None = None, **options: Any
) -> GrpcChecker:
    """The gRPC transport over the server's pipeline; `options` as `assembly.pipeline` takes."""
    return GrpcChecker(pipeline(serving, cache if cache is not None else TokenCache(), **options))


def check_request(
    *,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    host: str = "api.example.com",
    path: str = "/",
    context: dict[str, str] | None = None,
    scheme: str = "",
    peer_certificate: str = "",
) -> Any:
    """The CheckRequest Envoy sends for this HTTP request; `scheme` and `peer_certificate`
    (URL-encoded PEM, as include_peer_certificate sends it) describe the connection."""
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.host, http.path, http.scheme = method, host, path, scheme
    http.headers.update(headers or {})
    request.attributes.context_extensions.update(context or {})
    if peer_certificate:
        request.attributes.source.certificate = peer_certificate
    return request


@dataclass
class CheckClient:
    stub: Any
    store: PolicyStore
    checker: GrpcChecker
    cache: TokenCache
    metrics: Metrics  # on a registry of this server's own (the process one is shared)
    grpc_port: int  # on 127.0.0.1, for an Envoy in front

    def check(self, **request: Any) -> Any:
        """Check over gRPC; `request` as `check_request` takes."""
        return self.stub.Check(check_request(**request), timeout=10)


@contextmanager
def check_server(
    policy_dir: Path, threads: int = 4, tracer: Any = None, **options: Any
) -> Iterator[CheckClient]:
    store = policy_store(options.pop("workload_labels", {}), threads)
    load(DirectorySource(policy_dir), store)
    cache = options.pop("cache", None) or TokenCache()
    checker = grpc_checker(store, cache=cache, **options)
    metrics = Metrics(CollectorRegistry())
    recorder = Recorder(Audit(metrics), tracer)
    server, _health, port = grpc_server(checker, "127.0.0.1:0", recorder, threads=threads)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = external_auth_pb2_grpc.AuthorizationStub(channel)
    try:
        yield CheckClient(stub, store, checker, cache, metrics, port)
    finally:
        channel.close()
        server.stop(grace=None)
        store.close()


def header(response: Any, name: str) -> str | None:
    """A header of a CheckResponse (denied or ok), or None."""
    options = (
        response.denied_response.headers
        if response.HasField("denied_response")
        else response.ok_response.headers
    )
    for option in options:
        if option.header.key.lower() == name:
            return str(option.header.value)
    return None
