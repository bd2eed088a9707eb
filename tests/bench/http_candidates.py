"""The always-allow HTTP ext_authz server on the stacks that lost the measurement.

Kept so `python -m tests.bench.http_stacks` can repeat the comparison that chose the
HTTP floor's stack (tests/bench/trivial_http_server.py); each answers every request with
an empty `200`, like the floor. Their packages are not dependencies of authz: the
comparison marks a stack n/a when its package is not installed.

* granian (Rust HTTP server, hyper + tokio, calling Python through RSGI):
  `granian --interface rsgi tests.bench.http_candidates:rsgi_allow`
* socketify (uWebSockets + libuv through cffi):
  `python -m tests.bench.http_candidates --addr 127.0.0.1:9103`
"""

from __future__ import annotations

import argparse
from typing import Any


async def rsgi_allow(scope: Any, protocol: Any) -> None:
    """Granian RSGI handler: the empty 200."""
    protocol.response_empty(200, [])


def socketify_main(host: str, port: int) -> None:
    """socketify's App on every method and path: the empty 200."""
    from socketify import App, AppListenOptions  # type: ignore[import-not-found,import-untyped,unused-ignore]

    app = App()
    app.any("/*", lambda res, req: res.end(""))
    app.listen(AppListenOptions(port=port, host=host))
    app.run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--addr", default="127.0.0.1:9103", help="HOST:PORT to listen on")
    args = parser.parse_args(argv)
    host, _, port = args.addr.rpartition(":")
    socketify_main(host, int(port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
