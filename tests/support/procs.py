"""Helpers for tests that start real processes (authz, Envoy, the echo upstream).

Everything here is stdlib-only and deliberately small:

* :func:`free_port` - ask the kernel for an unused TCP port on 127.0.0.1.
* :func:`wait_for_tcp` / :func:`wait_for_unix` / :func:`wait_for_http` - poll until a
  server answers, failing fast (with the log tail) if the process we are waiting on dies.
* :func:`http_request` - one request that never raises on status or follows redirects.
* :func:`system_command` - a Debian-packaged server's path, or an error saying what to install.
* :func:`scratch_dir` - a short, world-readable temp dir for a server's files and sockets.
* :func:`alarm_paused` - take a one-off build out of pytest-timeout's per-test budget.
* :class:`Process` - a subprocess whose stdout+stderr go to a temp log file, stopped with
  SIGTERM and then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TextIO, TypeVar

T = TypeVar("T")

POLL_INTERVAL = 0.05


class ProcessError(RuntimeError):
    """A managed process died or a server did not come up in time."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free a moment ago (bind to port 0, read it, close).

    There is an unavoidable window between closing the probe socket and the real
    server binding the port; in practice the kernel does not hand the same
    ephemeral port out again that quickly.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def alarm_paused() -> Iterator[None]:
    """Suspend a pending SIGALRM timer (pytest-timeout's ``signal`` method) for the block,
    then re-arm it with the time it had left: for one-off builds of test binaries."""
    if (
        not hasattr(signal, "setitimer")
        or threading.current_thread() is not threading.main_thread()
    ):
        yield
        return
    remaining, interval = signal.setitimer(signal.ITIMER_REAL, 0)
    try:
        yield
    finally:
        if remaining > 0:
            signal.setitimer(signal.ITIMER_REAL, remaining, interval)


def system_command(name: str, package: str) -> str:
    """The path of a command a Debian package installs; fail with the fix if it is missing
    (a skipped test would hide that the part never ran)."""
    found = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise ProcessError(f"`{name}` not found: install Debian's {package} (`make deps`)")
    return found


def scratch_dir(prefix: str) -> Path:
    """A new short directory under /tmp, readable by other users: unix socket paths must stay
    under ~104 bytes, and servers that drop root (nginx workers run as nobody) must reach it."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp" if os.path.isdir("/tmp") else None))
    path.chmod(0o755)
    return path


def _check_alive(proc: Process | None, what: str) -> None:
    if proc is not None and not proc.alive:
        raise ProcessError(
            f"{proc.name} exited with code {proc.returncode} while waiting for {what}\n"
            f"{proc.tail()}"
        )


def _timeout_error(what: str, timeout: float, proc: Process | None, last: str) -> ProcessError:
    msg = f"timed out after {timeout:.1f}s waiting for {what}"
    if last:
        msg += f" (last error: {last})"
    if proc is not None:
        msg += f"\n{proc.tail()}"
    return ProcessError(msg)


def _wait(what: str, timeout: float, proc: Process | None, attempt: Callable[[], T]) -> T:
    """Call ``attempt`` until it returns (OSError means "not yet"); fail fast if ``proc`` dies."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        _check_alive(proc, what)
        try:
            return attempt()
        except OSError as exc:  # urllib.error.URLError is an OSError too
            last = str(exc)
        if time.monotonic() > deadline:
            raise _timeout_error(what, timeout, proc, last)
        time.sleep(POLL_INTERVAL)


def wait_for_tcp(
    host: str, port: int, timeout: float = 10.0, *, proc: Process | None = None
) -> None:
    """Block until something accepts TCP connections on ``host:port``."""

    def connect() -> None:
        with socket.create_connection((host, port), timeout=0.5):
            return

    _wait(f"tcp {host}:{port}", timeout, proc, connect)


def wait_for_unix(path: str | Path, timeout: float = 10.0, *, proc: Process | None = None) -> None:
    """Block until something accepts connections on the unix socket ``path``."""

    def connect() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            s.connect(os.fspath(path))

    _wait(f"unix socket {path}", timeout, proc, connect)


def wait_for_addr(addr: str, timeout: float = 10.0, *, proc: Process | None = None) -> None:
    """Wait for a gRPC-style address: ``host:port`` or ``unix:/path``."""
    if addr.startswith("unix:"):
        wait_for_unix(addr.removeprefix("unix:"), timeout, proc=proc)
    else:
        host, _, port = addr.rpartition(":")
        wait_for_tcp(host.strip("[]"), int(port), timeout, proc=proc)


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def upstream_headers(self) -> dict[str, str]:
        """For a response from the echo upstream (examples/upstream.py): what it received."""
        seen: dict[str, str] = self.json()["headers"]
        return seen


def http_request(
    base_url: str,
    method: str,
    path: str,
    headers: Mapping[str, str] | None = None,
    *,
    body: bytes | None = None,
    timeout: float = 10.0,
) -> HttpResponse:
    """One plain-HTTP request; never raises on HTTP status and never follows redirects
    (so 307s from Envoy's path handling stay visible). ``path`` is sent verbatim."""
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme != "http" or parts.hostname is None:
        raise ValueError(f"need an http://host:port base URL, got {base_url!r}")
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        merged: dict[str, str] = {}
        for name, value in resp.getheaders():
            key = name.lower()
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        return HttpResponse(resp.status, merged, resp.read())
    finally:
        conn.close()


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET ``url``; return ``(status, body)`` for any HTTP status (no raising on 4xx/5xx)."""
    req = urllib.request.Request(url, method="GET")  # noqa: S310 - test helper, http(s) only
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), exc.read()


def wait_for_http(
    url: str,
    timeout: float = 10.0,
    expect_status: int = 200,
    *,
    proc: Process | None = None,
) -> bytes:
    """Block until ``GET url`` returns ``expect_status``; return the response body."""

    def get() -> bytes:
        status, body = http_get(url, timeout=1.0)
        if status != expect_status:
            raise OSError(f"status {status}: {body[:200]!r}")
        return body

    return _wait(f"GET {url} -> {expect_status}", timeout, proc, get)


class Process:
    """A child process with its output captured to a log file.

    Use as a context manager (``with Process([...]) as p:``) or call :meth:`start`
    and :meth:`stop` yourself.  If the ``with`` body raises, the log tail is
    written to stderr (pytest shows it with the failure).  The temp log file is
    removed on a clean stop and kept (its path is printed) otherwise.
    """

    def __init__(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        grace: float = 5.0,
    ) -> None:
        self.argv = [os.fspath(a) for a in argv]
        self.name = name or Path(self.argv[0]).name
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.grace = grace
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_file: int | None = None
        self.log_path: Path | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        if self._popen is not None:
            raise ProcessError(f"{self.name} already started")
        fd, path = tempfile.mkstemp(prefix=f"{self.name}-", suffix=".log")
        self._log_file, self.log_path = fd, Path(path)
        self._popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            # Own process group: a Ctrl-C in the terminal does not hit the child
            # directly, and stop() can reap grandchildren of *this* process only.
            start_new_session=True,
        )
        return self

    def stop(self, grace: float | None = None) -> int | None:
        """SIGTERM, wait ``grace`` seconds, then SIGKILL the process group. Idempotent."""
        p = self._popen
        if p is None:
            return None
        if p.poll() is None:
            # The child is not reaped yet, so its pid (== its process group id, thanks
            # to start_new_session) cannot have been reused: signalling the group only
            # reaches the process we started and its own children.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=self.grace if grace is None else grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self._close_log()
        return p.returncode

    def _close_log(self) -> None:
        if self._log_file is not None:
            os.close(self._log_file)
            self._log_file = None

    def cleanup(self) -> None:
        """Stop the process and delete its log file."""
        self.stop()
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        if self._popen is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if exc is not None:
            self.print_tail()
        else:
            self.cleanup()

    # -- inspection --------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        if self._popen is None:
            raise ProcessError(f"{self.name} not started")
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    @property
    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def output(self) -> str:
        """Everything the process has written so far."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def tail(self, lines: int = 40) -> str:
        text = self.output().splitlines()[-lines:]
        head = f"----- last {len(text)} lines of {self.name} ({self._pid_str()}, {self.log_path})"
        return "\n".join([head, *text, "-----"])

    def print_tail(self, lines: int = 40, file: TextIO | None = None) -> None:
        print(self.tail(lines), file=file or sys.stderr)

    def assert_alive(self) -> None:
        _check_alive(self, "assert_alive")

    def _pid_str(self) -> str:
        return "not started" if self._popen is None else f"pid {self._popen.pid}"

    def __repr__(self) -> str:
        state = "running" if self.alive else f"exited {self.returncode}"
        return f"<Process {self.name} {self._pid_str()} {state}>"
