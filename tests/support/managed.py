"""What every test server wrapper (Caddy, nginx, Redis, Hydra, Envoy, Chromium, the control
plane) does the same way: ``with`` starts it; leaving the block reports what the server said
when the block raised, stops it and deletes its files; a failed start stops it at once.

A wrapper says how to start (``start``, usually ending in ``_run``) and, when it holds more
than one :class:`Process` and a scratch dir, how to stop and clean up.
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.support.procs import Process


class ManagedServer(ABC):
    """A server run for a test: ``process`` is its main process, ``dir`` its scratch dir."""

    process: Process | None = None
    dir: Path | None = None
    tail_lines = 40  # how much of the process's output a failure shows

    @abstractmethod
    def start(self) -> Self:
        """Start the server and return once it answers; raises ProcessError if it does not."""

    @property
    def started(self) -> bool:
        return self.process is not None

    def _run(self, process: Process, ready: Callable[[], object]) -> None:
        """Start ``process`` as this server's, then wait for ``ready()``; if that fails, stop
        (the error carries the log tail, and the files stay for a look)."""
        self.process = process.start()
        try:
            ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """End the server's processes; idempotent."""
        if self.process is not None:
            self.process.stop()

    def cleanup(self) -> None:
        """Stop, then delete the process log and the scratch dir."""
        self.stop()
        if self.process is not None:
            self.process.cleanup()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def report_failure(self) -> None:
        """Print what explains a failed test (pytest shows it with the failure): the tail
        of the process's output, then ``diagnostics``."""
        if self.process is not None:
            self.process.print_tail(self.tail_lines)
        extra = self.diagnostics()
        if extra:
            print(extra[-4000:])

    def diagnostics(self) -> str:
        """More for a failure report than the process output (a server's own log file)."""
        return ""

    def scratch_text(self, name: str) -> str:
        """The file ``name`` of the scratch dir as it is now ("" while there is none)."""
        path = None if self.dir is None else self.dir / name
        if path is None or not path.exists():
            return ""
        return path.read_text(encoding="utf-8", errors="replace")

    def __enter__(self) -> Self:
        if not self.started:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc is not None:
                self.report_failure()  # while it still runs: a browser's page, a live log
        finally:
            self.cleanup()
