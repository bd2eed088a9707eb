"""Jobs: one per key at a time, results kept for the next look, everything bounded."""

from __future__ import annotations

import threading
import time

from authz.oidc.jobs import Jobs


def test_one_job_per_key_and_its_result_is_kept() -> None:
    jobs = Jobs(workers=2)
    calls: list[int] = []
    gate = threading.Event()

    def work() -> int:
        gate.wait(5)
        calls.append(1)
        return 42

    first = jobs.run("k", work)
    second = jobs.run("k", work)
    assert first is second and first is not None
    assert not jobs.wait(first, 0.05)  # still running
    gate.set()
    assert jobs.wait(first, 5) and first.result() == 42
    assert jobs.run("k", work) is first  # kept: a later look picks the result up
    jobs.forget("k")
    third = jobs.run("k", work)
    assert third is not first and jobs.wait(third, 5)  # type: ignore[arg-type]
    assert len(calls) == 2
    jobs.close()


def test_results_expire() -> None:
    jobs = Jobs(keep=0.05)
    done = jobs.run("k", lambda: 1)
    assert done is not None and jobs.wait(done, 5)
    time.sleep(0.1)
    assert jobs.run("other", lambda: 2) is not None  # each run expires old results
    assert jobs.run("k", lambda: 3) is not done
    jobs.close()


def test_too_many_pending_jobs_are_refused() -> None:
    jobs = Jobs(workers=1, max_pending=2)
    gate = threading.Event()
    assert jobs.run("a", lambda: gate.wait(5)) is not None
    assert jobs.run("b", lambda: gate.wait(5)) is not None
    assert jobs.run("c", lambda: 1) is None  # busy: the caller answers 503
    assert not jobs.spawn(lambda: None)
    gate.set()
    jobs.close()


def test_only_a_few_checks_wait_at_once() -> None:
    jobs = Jobs(workers=1, waiters=1)
    gate = threading.Event()
    slow = jobs.run("slow", lambda: gate.wait(5))
    assert slow is not None
    waited: list[float] = []

    def waiter() -> None:
        started = time.monotonic()
        jobs.wait(slow, 0.5)
        waited.append(time.monotonic() - started)

    first = threading.Thread(target=waiter)
    first.start()
    time.sleep(0.1)
    started = time.monotonic()
    assert not jobs.wait(slow, 0.5)  # no slot free: returns at once
    assert time.monotonic() - started < 0.1
    first.join()
    assert waited[0] >= 0.45
    gate.set()
    jobs.close()
