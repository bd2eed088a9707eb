"""A trivial always-allow ext_authz server: the floor a Python authorizer is measured against.

Same stack as `authz serve` (sync grpcio, a thread pool, xds-protos on upb) but the
handler returns one prebuilt OK CheckResponse without looking at the request, so any
per-request cost above it is authz's own work. Run it with

    python -m tests.bench.trivial_server --addr 127.0.0.1:9101 [--threads 16]
"""

from __future__ import annotations

import argparse
import signal
import threading
from concurrent import futures
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2, status_pb2

OK = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))


class AllowAll(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """Returns the same OK response for every Check."""

    def Check(self, request: Any, context: Any) -> Any:
        return OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--addr", default="127.0.0.1:9101", help="HOST:PORT to listen on")
    parser.add_argument("--threads", type=int, default=16, help="gRPC handler threads")
    args = parser.parse_args(argv)
    # The same server options as authz.server.grpc_server, so only the handler differs.
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=args.threads, thread_name_prefix="check"),
        options=[("grpc.so_reuseport", 0)],
    )
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(AllowAll(), server)
    if server.add_insecure_port(args.addr) == 0:
        raise SystemExit(f"cannot listen on {args.addr}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=1.0).wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
