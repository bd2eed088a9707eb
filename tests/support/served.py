"""The scaffolding of the tests' in-process fakes (an identity provider, an introspection
endpoint, a JWKS host, a forward proxy...): a socketserver on a loopback port, served from a
daemon thread, closed when the ``with`` block ends.

    class Fake(ServedInThread[_Server]):
        def __init__(self) -> None:
            super().__init__(_Server(("127.0.0.1", 0), _Handler))
"""

from __future__ import annotations

import socketserver
import threading
from types import TracebackType
from typing import Generic, Self, TypeVar

S = TypeVar("S", bound=socketserver.TCPServer)


class ClosedOnExit:
    """``with thing:`` calls ``thing.close()`` at the end of the block."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ServedInThread(ClosedOnExit, Generic[S]):
    """``server`` served from a daemon thread from construction until ``close``; ``port`` is
    the port it listens on. ``poll_interval`` is how soon ``close`` is noticed."""

    def __init__(self, server: S, *, poll_interval: float = 0.05) -> None:
        self._server = server
        self.port: int = server.server_address[1]
        self._poll_interval = poll_interval
        self._thread: threading.Thread | None = None
        self._serve()

    def _serve(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": self._poll_interval},
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving and close the listening socket (connections are then refused);
        idempotent."""
        if self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread = None
