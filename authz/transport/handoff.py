"""HTTP check connections the `--workers` supervisor accepts and hands to its workers in turn.

Workers that each accept on the one shared socket do not share the work: the kernel wakes
a listening socket's waiters last-in first-out and an event loop accepts everything
pending when it wakes, so one worker takes a burst of new connections (of wrk's 32: 28 and
4, 26 and 6, or all 32 and none), and a proxy keeps its connections open, so that worker
keeps the load: two workers served 0.85x what one did. So the supervisor accepts instead
and passes each connection (SCM_RIGHTS over a socket pair per worker) to the next ready
worker in turn, as Node's cluster module does: every worker holds its share of the
proxy's connections. Only connection setup passes through the supervisor; requests go
straight to the worker. The one listening socket stays the supervisor's (no SO_REUSEPORT),
so no other process can co-bind the check port (issue 11).

A worker says it is ready (b"r") once it serves, and acknowledges each connection (b"a")
as it takes it, before reading from it. The supervisor keeps its copy of a connection
until then: when a worker dies (its pair ends) the connections it never took go to another
worker, so a dying worker loses no connection it had not started on. A worker with a
connection unacknowledged for `STUCK_SECONDS` gets no new ones until it catches up.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger("authz.workers")

_READY, _ACK = b"r", b"a"
STUCK_SECONDS = 0.5
_POLL_SECONDS = 0.2


def worker_pair() -> tuple[socket.socket, socket.socket]:
    """(the supervisor's end, the worker's end): one packet per message."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    return ours, theirs


@dataclass
class _Worker:
    pair: socket.socket | None = None
    ready: bool = False
    unacked: deque[tuple[float, socket.socket]] = field(default_factory=deque)
    handed: int = 0

    def takes_new(self, now: float) -> bool:
        return (
            self.pair is not None
            and self.ready
            and not (self.unacked and now - self.unacked[0][0] > STUCK_SECONDS)
        )


class Dispatcher:
    """The supervisor's side: accept on `listening`, hand each connection to a worker."""

    def __init__(self, listening: socket.socket, count: int) -> None:
        self.listening = listening
        self._workers = [_Worker() for _ in range(count)]
        self._next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="http-check-accept", daemon=True)

    @property
    def handed(self) -> list[int]:
        """Connections each worker took so far."""
        return [w.handed for w in self._workers]

    def all_ready(self) -> bool:
        """Whether every worker said it serves (the pod's readiness waits for it)."""
        with self._lock:
            return all(w.ready for w in self._workers)

    def attach(self, index: int) -> socket.socket:
        """A new pair for worker `index` (started or restarted): returns the worker's end,
        for the caller to pass to the process and then close."""
        ours, theirs = worker_pair()
        with self._lock:
            self._lost(index)
            self._workers[index].pair = ours
        return theirs

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting (new connections then wait in the backlog) and close the pairs."""
        self._stop.set()
        self._thread.join(5)
        with self._lock:
            for worker in self._workers:
                if worker.pair is not None:
                    worker.pair.close()
                    worker.pair = None
                while worker.unacked:
                    worker.unacked.popleft()[1].close()

    def _run(self) -> None:
        while not self._stop.is_set():
            poller = select.poll()
            poller.register(self.listening, select.POLLIN)
            with self._lock:
                pairs = {w.pair.fileno(): i for i, w in enumerate(self._workers) if w.pair}
            for fd in pairs:
                poller.register(fd, select.POLLIN)
            events = poller.poll(_POLL_SECONDS * 1000)
            with self._lock:
                for index in set(pairs.values()):
                    self._read(index)  # acks, readiness, an end (also on the timeout)
            if any(fd == self.listening.fileno() for fd, _ in events):
                self._accept_pending()

    def _accept_pending(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: the backlog keeps them
                log.error("accepting an HTTP check connection failed", error=str(exc))
                self._stop.wait(0.1)
                return
            with self._lock:
                self._hand(conn)

    # -- under the lock ---------------------------------------------------------------------

    def _hand(self, conn: socket.socket) -> None:
        """Pass `conn` to the next worker that takes new connections (else to any live one,
        which serves it once it can); kept until acknowledged. Closed if none is alive."""
        count, now = len(self._workers), time.monotonic()
        order = [(self._next + i) % count for i in range(count)]
        candidates = [i for i in order if self._workers[i].takes_new(now)] or order
        for index in candidates:
            worker = self._workers[index]
            if worker.pair is None:
                continue
            try:
                socket.send_fds(worker.pair, [b"c"], [conn.fileno()])
            except BlockingIOError:  # its queue is full: it is stuck, try another
                continue
            except OSError:  # it died; what it had not taken goes elsewhere
                self._lost(index)
                continue
            worker.unacked.append((now, conn))
            worker.handed += 1
            self._next = (index + 1) % count
            return
        log.error("no worker could take an HTTP check connection; closed it")
        conn.close()

    def _read(self, index: int) -> None:
        worker = self._workers[index]
        while worker.pair is not None:
            try:
                message = worker.pair.recv(256)
            except BlockingIOError:
                return
            except OSError:
                message = b""
            if not message:  # the worker is gone
                self._lost(index)
                return
            if message == _READY:
                worker.ready = True
            for _ in range(message.count(_ACK)):
                if worker.unacked:
                    worker.unacked.popleft()[1].close()

    def _lost(self, index: int) -> None:
        """Worker `index` ended: close its pair, and hand what it never took to others."""
        worker = self._workers[index]
        if worker.pair is not None:
            worker.pair.close()
        worker.pair, worker.ready = None, False
        orphans, worker.unacked = worker.unacked, deque()
        for _, conn in orphans:
            self._hand(conn)


@dataclass(frozen=True)
class Handed:
    """What a worker serves HTTP checks from: its end of the pair, and the address the
    supervisor listens on (for the logs)."""

    pair: socket.socket
    address: str

    def announce_ready(self) -> None:
        """Tell the supervisor connections may come."""
        self.pair.send(_READY)

    def receive(self) -> tuple[list[socket.socket], bool]:
        """The connections handed over so far (non-blocking), each acknowledged, and
        whether the supervisor has closed its end (then no more will come)."""
        taken: list[socket.socket] = []
        closed = False
        while True:
            try:
                message, fds, _flags, _addr = socket.recv_fds(self.pair, 16, 8)
            except BlockingIOError:
                break
            except OSError:
                closed = True
                break
            taken.extend(socket.socket(fileno=fd) for fd in fds)
            if not message and not fds:
                closed = True
                break
        if taken and not closed:
            try:
                self.pair.send(_ACK * len(taken))
            except OSError:
                closed = True
        return taken, closed
