"""A trivial always-allow ext_authz server: the floor a Python authorizer is measured against.

Same stack as `authz serve` (sync grpcio, a thread pool, xds-protos on upb) but the
handler returns one prebuilt OK CheckResponse without looking at the request, so any
per-request cost above it is authz's own work. Run it with

    python -m tests.bench.trivial_server --addr 127.0.0.1:9101 [--threads 16]

The bench's floor is that default. `--raw` registers the method with no (de)serialisers
and answers prebuilt bytes, `--aio` serves on grpc.aio's event loop instead of a thread
pool: variants for pricing what grpcio itself costs (tests.bench.compare).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2, status_pb2

OK = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))
OK_BYTES: bytes = OK.SerializeToString()
SERVICE = "envoy.service.auth.v3.Authorization"


class AllowAll(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """Returns the same OK response for every Check."""

    def Check(self, request: Any, context: Any) -> Any:
        return OK


def _raw_handler(check: Callable[..., Any]) -> Any:
    """Check with bytes in and prebuilt bytes out: no protobuf work at all."""
    method = grpc.unary_unary_rpc_method_handler(check)
    return grpc.method_handlers_generic_handler(SERVICE, {"Check": method})


def serve_sync(args: argparse.Namespace) -> None:
    # The same server options as authz's gRPC transport, so only the handler differs.
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=args.threads, thread_name_prefix="check"),
        options=[("grpc.so_reuseport", 0), *args.option],
    )
    if args.raw:
        server.add_generic_rpc_handlers((_raw_handler(lambda request, context: OK_BYTES),))
    else:
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(AllowAll(), server)
    if server.add_insecure_port(args.addr) == 0:
        raise SystemExit(f"cannot listen on {args.addr}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=1.0).wait()


async def serve_aio(args: argparse.Namespace) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    if args.raw:

        async def check(request: bytes, context: Any) -> bytes:
            return OK_BYTES

        server.add_generic_rpc_handlers((_raw_handler(check),))
    else:

        class AioAllowAll(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
            async def Check(self, request: Any, context: Any) -> Any:
                return OK

        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(AioAllowAll(), server)
    if server.add_insecure_port(args.addr) == 0:
        raise SystemExit(f"cannot listen on {args.addr}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)


def _channel_arg(text: str) -> tuple[str, int | str]:
    key, _, value = text.partition("=")
    return key, int(value) if value.lstrip("-").isdigit() else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--addr", default="127.0.0.1:9101", help="HOST:PORT to listen on")
    parser.add_argument("--threads", type=int, default=16, help="gRPC handler threads")
    parser.add_argument("--raw", action="store_true", help="bytes in, prebuilt bytes out")
    parser.add_argument("--aio", action="store_true", help="grpc.aio instead of threads")
    parser.add_argument("--uvloop", action="store_true", help="with --aio: on uvloop")
    parser.add_argument(
        "--option", type=_channel_arg, action="append", default=[], help="grpc arg: KEY=VALUE"
    )
    args = parser.parse_args(argv)
    if not args.aio:
        serve_sync(args)
        return 0
    if args.uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(serve_aio(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
