"""Paced HTTP load through Envoy: keep-alive connections, one schedule shared by all workers.

Every request gets a unique path (`/soak/<route>/<seq>`) so its audit line can be found,
and its send and receive times are recorded (monotonic) for the check against policy swaps.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from dataclasses import dataclass

from tests.soak.scenario import KINDS, ROUTES, Tokens


@dataclass
class Sent:
    seq: int
    route: str
    kind: str
    sent: float
    received: float = 0.0
    status: int = 0  # 0: no HTTP answer (see error)
    error: str = ""


class Load:
    """`run(rps, seconds)`: rps <= 0 means as fast as the workers go (capacity probe)."""

    def __init__(self, port: int, tokens: Tokens, workers: int = 8, seed: int = 7) -> None:
        self.port = port
        self.tokens = tokens
        self.workers = workers
        self.results: list[Sent] = []
        self._lock = threading.Lock()
        self._seq = 0
        self._seed = seed

    def _next(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def run(self, rps: float, seconds: float) -> list[Sent]:
        start = time.monotonic()
        stop_at = start + seconds
        batch: list[Sent] = []
        first = self._seq + 1  # sequence numbers run on across runs; the schedule restarts
        threads = [
            threading.Thread(
                target=self._worker,
                args=(i, rps, start - first / rps if rps > 0 else start, stop_at, batch),
                daemon=True,
            )
            for i in range(self.workers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=seconds + 60)
        self.results.extend(batch)
        return batch

    def _worker(
        self, index: int, rps: float, origin: float, stop_at: float, out: list[Sent]
    ) -> None:
        rng = random.Random(self._seed * 1000 + index)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        mine: list[Sent] = []
        while True:
            seq = self._next()
            if rps > 0:  # request `seq` is due at origin + seq / rps, whichever worker sends it
                due = origin + seq / rps
                if due >= stop_at:
                    break
                time.sleep(max(0.0, due - time.monotonic()))
            elif time.monotonic() >= stop_at:
                break
            route, kind = rng.choice(ROUTES), rng.choice(KINDS)
            token = self.tokens.pick(kind, rng)
            headers = {"authorization": f"Bearer {token}"} if token is not None else {}
            sent = Sent(seq, route, kind, time.monotonic())
            try:
                conn.request("GET", f"/soak/{route}/{seq}", headers=headers)
                response = conn.getresponse()
                response.read()
                sent.status = response.status
            except (OSError, http.client.HTTPException) as exc:
                sent.error = f"{type(exc).__name__}: {exc}"
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            sent.received = time.monotonic()
            mine.append(sent)
        conn.close()
        with self._lock:
            out.extend(mine)
