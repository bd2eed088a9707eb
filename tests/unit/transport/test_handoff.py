"""The supervisor's hand-off of HTTP check connections (authz.transport.handoff), with real
sockets in one process: a listening socket, the dispatcher, and each worker's end of its
pair read as a worker reads it."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from authz.transport import handoff
from authz.transport.handoff import Dispatcher, Handed
from authz.transport.sockets import listen

_OPENED: list[socket.socket] = []  # closed after each test, passed or failed


@pytest.fixture
def dispatcher() -> Iterator[Dispatcher]:
    listening = listen("127.0.0.1:0")
    dispatcher = Dispatcher(listening, 2)
    yield dispatcher
    dispatcher.stop()
    listening.close()
    while _OPENED:
        _OPENED.pop().close()


def _worker(dispatcher: Dispatcher, index: int, *, ready: bool = True) -> Handed:
    end = dispatcher.attach(index)
    end.setblocking(False)
    _OPENED.append(end)
    worker = Handed(end, "test")
    if ready:
        worker.announce_ready()
    return worker


def _connect(dispatcher: Dispatcher, payload: bytes) -> socket.socket:
    client = socket.create_connection(dispatcher.listening.getsockname()[:2], timeout=5)
    _OPENED.append(client)
    client.sendall(payload)
    return client


def _take(worker: Handed, count: int, timeout: float = 5.0) -> list[socket.socket]:
    """What `worker` is handed, until `count` connections came (or the time is up)."""
    taken: list[socket.socket] = []
    deadline = time.monotonic() + timeout
    while len(taken) < count and time.monotonic() < deadline:
        more, _closed = worker.receive()
        taken += more
        time.sleep(0.01)
    return taken


def _count(worker: Handed, count: int, timeout: float = 5.0) -> int:
    taken = _take(worker, count, timeout)
    for conn in taken:
        conn.close()
    return len(taken)


def _payloads(connections: list[socket.socket]) -> set[bytes]:
    out = set()
    for conn in connections:
        conn.settimeout(5)
        out.add(conn.recv(64))
        conn.close()
    return out


def test_connections_go_to_the_ready_workers_in_turn(dispatcher: Dispatcher) -> None:
    first, second = _worker(dispatcher, 0), _worker(dispatcher, 1)
    dispatcher.start()
    time.sleep(0.3)  # the dispatcher reads both workers' "ready"
    for i in range(6):
        _connect(dispatcher, f"req-{i}".encode())
    got = _take(first, 3), _take(second, 3)
    assert [len(g) for g in got] == [3, 3] and dispatcher.handed == [3, 3]
    assert _payloads(got[0]) | _payloads(got[1]) == {f"req-{i}".encode() for i in range(6)}


def test_a_worker_not_ready_yet_gets_nothing_while_another_is(dispatcher: Dispatcher) -> None:
    ready, starting = _worker(dispatcher, 0), _worker(dispatcher, 1, ready=False)
    dispatcher.start()
    time.sleep(0.3)
    assert not dispatcher.all_ready()
    for _ in range(4):
        _connect(dispatcher, b"x")
    assert _count(ready, 4) == 4 and _count(starting, 1, timeout=0.5) == 0


def test_what_a_dead_worker_never_took_goes_to_another(dispatcher: Dispatcher) -> None:
    """Handed to a worker that ends before taking it: the client's bytes reach the other."""
    survivor, dying = _worker(dispatcher, 0), _worker(dispatcher, 1)
    dispatcher.start()
    time.sleep(0.3)
    for i in range(4):
        _connect(dispatcher, f"req-{i}".encode())
    time.sleep(0.3)  # two of them wait, unread, in the dying worker's pair
    dying.pair.close()
    taken = _take(survivor, 4)
    assert _payloads(taken) == {f"req-{i}".encode() for i in range(4)}


def test_a_stuck_worker_gets_no_new_connections(
    dispatcher: Dispatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handoff, "STUCK_SECONDS", 0.3)
    awake, stuck = _worker(dispatcher, 0), _worker(dispatcher, 1)
    dispatcher.start()
    time.sleep(0.3)
    for _ in range(2):  # one each; `stuck` never reads
        _connect(dispatcher, b"x")
    time.sleep(0.5)
    assert _count(awake, 1) == 1  # `awake` takes (and acknowledges) its one
    time.sleep(0.3)  # the dispatcher reads the acknowledgement; `stuck`'s one is now old
    for _ in range(4):
        _connect(dispatcher, b"y")
    assert _count(awake, 4) == 4 and dispatcher.handed == [5, 1]
    assert _count(stuck, 1) == 1  # it gets the one it was given when it catches up
