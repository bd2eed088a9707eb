"""An authz Check server in this process, on a free loopback port, for tests that speak gRPC."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz.check import Checker
from authz.policy.source import DirectorySource, load
from authz.policy.store import PolicyStore
from authz.server import grpc_server


@dataclass
class CheckClient:
    stub: Any
    store: PolicyStore
    checker: Checker

    def check(
        self,
        *,
        headers: dict[str, str] | None = None,
        method: str = "GET",
        host: str = "api.example.com",
        path: str = "/",
        context: dict[str, str] | None = None,
    ) -> Any:
        request = external_auth_pb2.CheckRequest()
        http = request.attributes.request.http
        http.method, http.host, http.path = method, host, path
        http.headers.update(headers or {})
        request.attributes.context_extensions.update(context or {})
        return self.stub.Check(request, timeout=10)


@contextmanager
def check_server(
    policy_dir: Path, threads: int = 4, tracer: Any = None, **checker_args: Any
) -> Iterator[CheckClient]:
    store = PolicyStore(checker_args.pop("workload_labels", None))
    load(DirectorySource(policy_dir), store)
    checker = Checker(store, **checker_args)
    server, _health, port = grpc_server(checker, "127.0.0.1:0", threads=threads, tracer=tracer)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield CheckClient(external_auth_pb2_grpc.AuthorizationStub(channel), store, checker)
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
