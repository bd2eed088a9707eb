#!/usr/bin/env python3
"""A tiny HTTP echo upstream for the demo and the e2e tests.

    python examples/upstream.py --port 8081 [--host 127.0.0.1]

Every request (any method, any path) gets ``200`` and a JSON body::

    {"method": "GET", "path": "/orders/1?x=1", "headers": {"x-auth-subject": "alice", ...}}

Header names are lower-cased; repeated headers are joined with ", ". The request body
is read and discarded. Stdlib only, so it runs anywhere Python 3.11 does.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType


class EchoHandler(BaseHTTPRequestHandler):
    server_version = "authz-echo/1"
    protocol_version = "HTTP/1.1"  # keep-alive, as Envoy expects from an upstream

    def _echo(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        body = json.dumps(
            {"method": self.command, "path": self.path, "headers": headers},
            indent=2,
            sort_keys=True,
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _echo

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: no per-request access log on stderr."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)

    server = ThreadingHTTPServer((args.host, args.port), EchoHandler)
    server.daemon_threads = True

    def _stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() blocks until serve_forever returns, so call it off the main thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(f"echo upstream listening on http://{args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
