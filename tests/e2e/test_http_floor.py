"""The bench's HTTP floor behaves like an HTTP ext_authz server Envoy can keep alive.

`make bench` compares issue 14's HTTP transport against tests/bench/trivial_http_server.py,
so it must answer the way Envoy's `http_service` needs: a 200 for any method and path,
many checks on one keep-alive connection, `connection: close` honoured, and a broken
request answered 400 and dropped rather than wedging the connection. The Envoy configs
the bench builds for `http_service` (HTTP/1.1, h2c, capped connections) must validate.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bench import envoy_configs
from tests.bench.stack import REPO_ROOT, child_env
from tests.support.envoy import validate_config
from tests.support.procs import Process, free_port, wait_for_tcp

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["uvloop", "asyncio"])
def floor(request: pytest.FixtureRequest) -> Iterator[int]:
    port = free_port()
    argv = [
        sys.executable, "-m", "tests.bench.trivial_http_server",
        "--addr", f"127.0.0.1:{port}", "--loop", request.param,
    ]  # fmt: skip
    with Process(argv, name="trivial-http", env=child_env(), cwd=REPO_ROOT) as proc:
        wait_for_tcp("127.0.0.1", port, 30.0, proc=proc)
        yield port


def _exchange(sock: socket.socket, request: bytes) -> bytes:
    """Send one request, read one complete (empty-bodied) response."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _check(method: str, path: str, extra: str = "") -> bytes:
    return (
        f"{method} {envoy_configs.HTTP_CHECK_PREFIX}{path} HTTP/1.1\r\n"
        f"host: bench.example\r\nauthorization: Bearer x\r\ncontent-length: 0\r\n{extra}\r\n"
    ).encode()


def test_many_checks_share_one_keep_alive_connection(floor: int) -> None:
    with socket.create_connection(("127.0.0.1", floor), timeout=5) as sock:
        for method, path in [("GET", "/orders/1"), ("POST", "/orders"), ("DELETE", "/x?y=1")]:
            response = _exchange(sock, _check(method, path))
            assert response.startswith(b"HTTP/1.1 200 OK\r\n"), response
            assert b"content-length: 0" in response.lower()


def test_connection_close_is_honoured(floor: int) -> None:
    with socket.create_connection(("127.0.0.1", floor), timeout=5) as sock:
        response = _exchange(sock, _check("GET", "/a", "connection: close\r\n"))
        assert response.startswith(b"HTTP/1.1 200 OK\r\n")
        assert sock.recv(4096) == b""  # the server closed its end


def test_malformed_request_gets_400_and_the_connection_is_dropped(floor: int) -> None:
    with socket.create_connection(("127.0.0.1", floor), timeout=5) as sock:
        response = _exchange(sock, b"NOT HTTP AT ALL\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 400 Bad Request\r\n"), response
        assert sock.recv(4096) == b""


@pytest.mark.parametrize(
    ("http2", "max_connections"), [(False, None), (False, 4), (True, None)], ids=str
)
def test_http_service_bootstraps_validate(
    tmp_path: Path, http2: bool, max_connections: int | None
) -> None:
    bootstrap = envoy_configs.ext_authz_http(
        free_port(), free_port(), "127.0.0.1:9102", http2=http2, max_connections=max_connections
    )
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(bootstrap))
    result = validate_config(path)
    assert result.returncode == 0, result.stdout + result.stderr
