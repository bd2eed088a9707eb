"""Listening sockets for the HTTP transport, bound by the server or by the `--workers`
supervisor (whose workers inherit one socket and accept on it: no SO_REUSEPORT, so no other
process of the same user can co-bind the check port and answer for its share)."""

from __future__ import annotations

import os
import socket
import stat


def listen(addr: str, backlog: int = 1024) -> socket.socket:
    """A listening socket for `HOST:PORT`, `[V6]:PORT` or `unix:/path` (a stale socket file
    left by a dead process is replaced; a live one is an error)."""
    if addr.startswith("unix:"):
        path = addr.removeprefix("unix:")
        _remove_stale_socket(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
    else:
        host, _, port = addr.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        # Rebinding after a restart (TIME_WAIT); on Linux it never lets a second listener in.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, int(port)))
        except OSError:
            sock.close()
            raise
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def _remove_stale_socket(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: left by a process that died
    else:
        raise OSError(f"{path}: another process is listening")
    finally:
        probe.close()


def address_of(sock: socket.socket) -> str:
    """What a listening socket is bound to, as --http-check-addr spells it."""
    name = sock.getsockname()
    if isinstance(name, str):
        return f"unix:{name}"
    host, port = name[0], name[1]
    return f"[{host}]:{port}" if sock.family == socket.AF_INET6 else f"{host}:{port}"
