"""redis-server (Debian's package) on a unix socket in a temp dir, persistence off.

A unix socket avoids TCP port races between parallel test workers; ``tcp=True`` also listens
on a free loopback port for a component that only takes ``host:port``. Nothing but the log is
written (``save ''``, ``appendonly no``). SIGTERM stops it cleanly.

    with RedisServer() as server:
        r = server.client()
        assert r.set("jti:abc", "1", nx=True, ex=2) is True

Pitfall: redis-py answers a ``SET NX`` that did not set the key with ``None``, not ``False``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

import redis

from tests.support.managed import ManagedServer
from tests.support.procs import (
    Process,
    free_port,
    scratch_dir,
    system_command,
    wait_for_tcp,
    wait_for_unix,
)


class RedisServer(ManagedServer):
    """``with RedisServer() as server:``; ``server.url`` is ``unix:///.../redis.sock``."""

    def __init__(self, *, tcp: bool = False, ready_timeout: float = 10.0) -> None:
        self.tcp = tcp
        self.ready_timeout = ready_timeout
        self.dir: Path | None = None
        self.port: int | None = None
        self.process: Process | None = None

    @property
    def socket_path(self) -> Path:
        if self.dir is None:
            raise RuntimeError("redis-server not started")
        return self.dir / "redis.sock"

    @property
    def url(self) -> str:
        """A redis-py / Redis URL for the unix socket."""
        return f"unix://{self.socket_path}"

    @property
    def tcp_url(self) -> str:
        if self.port is None:
            raise RuntimeError("started without tcp=True")
        return f"redis://127.0.0.1:{self.port}"

    def client(self, *, decode_responses: bool = True) -> redis.Redis:
        """A client on the unix socket (str values unless ``decode_responses=False``)."""
        return redis.Redis(
            unix_socket_path=str(self.socket_path), decode_responses=decode_responses
        )

    def start(self) -> Self:
        server = system_command("redis-server", "redis-server")
        self.dir = scratch_dir("redis-")
        self.port = free_port() if self.tcp else None
        argv = [
            server,
            "--port", str(self.port or 0),
            "--bind", "127.0.0.1",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--logfile", "",  # to stdout, which Process captures
        ]  # fmt: skip
        process = Process(argv, name="redis-server")
        self._run(process, lambda: self._ready(process))
        return self

    def _ready(self, process: Process) -> None:
        wait_for_unix(self.socket_path, self.ready_timeout, proc=process)
        if self.port is not None:
            wait_for_tcp("127.0.0.1", self.port, self.ready_timeout, proc=process)
