"""structlog setup: JSON lines on stdout, one audit line per decision, never a token.

The audit line is written for every Check, so it is cheap on purpose: it skips
structlog's processor chain (~5 us per line even when empty) and is rendered by orjson
straight into the same buffer structlog's lines go to, with the same fields (`event`,
`level`, `timestamp` as structlog writes them). `audit_members` takes the line's fields
already rendered, so a caller can keep the parts that repeat (observe/audit.py). A background thread flushes that buffer
every 200 ms (and at exit), instead of one write and flush syscall per Check. A process
killed with SIGKILL may lose the last 200 ms of lines.
"""

from __future__ import annotations

import atexit
import io
import logging
import sys
import threading
import time
from typing import Any, BinaryIO, cast

import orjson
import structlog

FLUSH_SECONDS = 0.2


class _BufferedLines:
    """A file-like sink for structlog.BytesLogger: `flush` is left to the flusher thread."""

    def __init__(self, raw: Any) -> None:
        self._out = io.BufferedWriter(raw, buffer_size=1 << 16)
        threading.Thread(target=self._flusher, name="log-flush", daemon=True).start()
        atexit.register(self.drain)

    def write(self, data: bytes) -> None:
        self._out.write(data)  # BufferedWriter takes its own lock

    def flush(self) -> None:
        """Called by BytesLogger after every line: a no-op, the thread flushes."""

    def drain(self) -> None:
        self._out.flush()

    def _flusher(self) -> None:
        event = threading.Event()
        while not event.wait(FLUSH_SECONDS):
            try:
                self.drain()
            except (OSError, ValueError):  # stdout closed or gone: nothing left to do
                return


# JSON allows U+2028, U+2029 and U+0085 raw inside strings, but log readers may break a line
# there: a claim could split an audit line in two. They only occur inside strings, where
# the escaped form is the same JSON.
_LINE_BREAKS = (
    (b"\xe2\x80\xa8", b"\\u2028"),
    (b"\xe2\x80\xa9", b"\\u2029"),
    (b"\xc2\x85", b"\\u0085"),
)


def _one_line(obj: Any, **options: Any) -> bytes:
    line = orjson.dumps(obj, **options)
    if b"\xe2\x80" in line or b"\xc2\x85" in line:
        for raw, escaped in _LINE_BREAKS:
            line = line.replace(raw, escaped)
    return line


class _AuditLines:
    """Where audit lines go: the JSON sink (fast path), or structlog (console output)."""

    sink: _BufferedLines | None = None
    enabled = True  # the configured level lets info lines through
    second = -1
    prefix = ""
    tail = b""  # `,"level":"info","timestamp":"<prefix>.` as bytes, for audit_members


_AUDIT = _AuditLines()
_fallback = structlog.get_logger("authz.audit")


def _timestamp(now: float) -> str:
    """ISO 8601 UTC with microseconds, as structlog's TimeStamper(fmt="iso", utc=True)
    writes it; the date and time of day are formatted once per second."""
    second = int(now)
    if second != _AUDIT.second:
        _new_second(second)
    return f"{_AUDIT.prefix}.{int((now - second) * 1_000_000):06d}Z"


def _new_second(second: int) -> None:
    prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    _AUDIT.prefix = prefix
    _AUDIT.tail = b',"level":"info","timestamp":"' + prefix.encode() + b"."
    _AUDIT.second = second


def audit_line(event: str, fields: dict[str, Any]) -> None:
    """One audit line: `event` and `fields` as a JSON object on one line."""
    if not _AUDIT.enabled:
        return
    sink = _AUDIT.sink
    if sink is None:
        _fallback.info(event, **fields)
        return
    line = {"event": event, **fields, "level": "info", "timestamp": _timestamp(time.time())}
    sink.write(_one_line(line) + b"\n")


def audit_rendered() -> bool:
    """Whether audit lines go to the JSON sink, so `audit_members` may be used (otherwise,
    and when the level drops them, `audit_line` is the way: it does what is right)."""
    return _AUDIT.enabled and _AUDIT.sink is not None


def audit_members(members: bytes) -> None:
    """One audit line from its fields already rendered as JSON object members, without
    braces (`"event":"decision","decision":"allow",...`), as `audit_line` writes them:
    `level` and `timestamp` follow. Only while `audit_rendered()`."""
    sink = _AUDIT.sink
    assert sink is not None
    if not members.isascii():  # a fast test; the line breaks are not ASCII
        for raw, escaped in _LINE_BREAKS:
            members = members.replace(raw, escaped)
    now = time.time()
    second = int(now)
    if second != _AUDIT.second:
        _new_second(second)
    # as _timestamp() writes it, formatted straight into the line
    sink.write(b'{%b%b%06dZ"}\n' % (members, _AUDIT.tail, int((now - second) * 1_000_000)))


def configure(level: str = "info", json_output: bool = True) -> None:
    processors: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    if json_output:
        processors.append(structlog.processors.JSONRenderer(serializer=_one_line))
        sink = _BufferedLines(io.FileIO(sys.stdout.fileno(), "wb", closefd=False))
        factory: structlog.typing.WrappedLogger = structlog.BytesLoggerFactory(cast(BinaryIO, sink))
        _AUDIT.sink = sink
    else:
        processors.append(structlog.dev.ConsoleRenderer())
        factory = structlog.PrintLoggerFactory(sys.stdout)
        _AUDIT.sink = None
    _AUDIT.enabled = logging.getLevelNamesMapping()[level.upper()] <= logging.INFO
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
