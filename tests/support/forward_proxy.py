"""A forward HTTP proxy on 127.0.0.1 for tests, as corporate egress proxies behave: CONNECT
tunnels for https (bytes relayed both ways, TLS stays end to end) and absolute-form requests
for plain http, optionally demanding Basic Proxy-Authorization (407 otherwise). It records
every request line, so a test can see which fetches went through it.

    with ForwardProxy(credentials=("u", "p")) as proxy:
        env = {"HTTPS_PROXY": proxy.url_with("u", "p")}
        ...
        assert proxy.requests == ["CONNECT 127.0.0.1:4443"]
"""

from __future__ import annotations

import base64
import select
import socket
import socketserver
import threading
import urllib.parse

from tests.support.served import ServedInThread


class _Handler(socketserver.StreamRequestHandler):
    server: _Server
    rbufsize = 0  # unbuffered: nothing the client sent after the headers is left behind

    def handle(self) -> None:
        line = self.rfile.readline(8192).decode("latin-1").strip()
        headers: dict[str, str] = {}
        while True:
            header = self.rfile.readline(8192).decode("latin-1")
            if header in ("\r\n", "\n", ""):
                break
            name, _, value = header.partition(":")
            headers[name.strip().lower()] = value.strip()
        method, _, rest = line.partition(" ")
        target = rest.rpartition(" ")[0]
        with self.server.lock:
            self.server.requests.append(f"{method} {target}")
        if not self._authorized(headers.get("proxy-authorization", "")):
            self._answer(
                b"407 Proxy Authentication Required", b'Proxy-Authenticate: Basic realm="t"\r\n'
            )
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            try:
                upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=5)
            except OSError:
                self._answer(b"502 Bad Gateway")
                return
            self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            self.wfile.flush()
            self._relay(upstream)
            return
        parts = urllib.parse.urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            self._answer(b"400 Bad Request")
            return
        try:
            upstream = socket.create_connection((parts.hostname, parts.port or 80), timeout=5)
        except OSError:
            self._answer(b"502 Bad Gateway")
            return
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        forwarded = [f"{method} {path or '/'} HTTP/1.1"]
        forwarded += [f"{k}: {v}" for k, v in headers.items() if not k.startswith("proxy-")]
        forwarded += ["Connection: close", "", ""]
        upstream.sendall("\r\n".join(forwarded).encode("latin-1"))
        self._relay(upstream)

    def _authorized(self, value: str) -> bool:
        expected = self.server.credentials
        if expected is None:
            return True
        token = base64.b64encode(f"{expected[0]}:{expected[1]}".encode()).decode()
        return value == f"Basic {token}"

    def _answer(self, status: bytes, extra: bytes = b"") -> None:
        self.wfile.write(b"HTTP/1.1 " + status + b"\r\n" + extra + b"Content-Length: 0\r\n\r\n")

    def _relay(self, upstream: socket.socket) -> None:
        client = self.connection
        with upstream:
            sockets = [client, upstream]
            while True:
                readable, _, _ = select.select(sockets, [], [], 10)
                if not readable:
                    return
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (upstream if sock is client else client).sendall(data)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, credentials: tuple[str, str] | None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.credentials = credentials
        self.lock = threading.Lock()
        self.requests: list[str] = []


class ForwardProxy(ServedInThread[_Server]):
    """See the module docstring."""

    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        super().__init__(_Server(credentials))
        self.url = f"http://127.0.0.1:{self.port}"

    def url_with(self, user: str, password: str) -> str:
        quote = urllib.parse.quote
        return f"http://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[str]:
        with self._server.lock:
            return list(self._server.requests)
