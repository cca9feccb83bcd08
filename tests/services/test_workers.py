import threading
import time

import pytest

from services.workers import Workers

WAIT = 10.0


@pytest.fixture
def workers():
    made: list[Workers] = []

    def make(max_threads: int, **options: float) -> Workers:
        pool = Workers(max_threads, "test", **options)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.shutdown()


def _held(pool: Workers, count: int) -> tuple[threading.Event, list[int]]:
    """`count` tasks submitted to `pool`, each held until the event is set; the list gets each index as it ends."""
    gate = threading.Event()
    done: list[int] = []
    for index in range(count):
        pool.submit(lambda index=index: (gate.wait(WAIT), done.append(index)))
    return gate, done


def _wait_until(condition, seconds: float = WAIT) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_as_many_tasks_run_at_once_as_there_are_threads(workers):
    pool = workers(8)
    together = threading.Barrier(8, timeout=WAIT)
    passed: list[int] = []
    for index in range(8):
        pool.submit(lambda index=index: (together.wait(), passed.append(index)))
    _wait_until(lambda: len(passed) == 8)
    assert pool.threads == 8


def test_tasks_beyond_the_limit_wait_for_a_free_thread_then_all_threads_are_free_again(workers):
    pool = workers(2)
    gate, done = _held(pool, 5)
    time.sleep(0.1)
    assert done == []
    assert pool.threads == 2
    gate.set()
    _wait_until(lambda: len(done) == 5)
    assert sorted(done) == [0, 1, 2, 3, 4]
    # The backlog did not leave either thread counted busy: two tasks that need each other still run together.
    together = threading.Barrier(2, timeout=WAIT)
    met: list[bool] = []
    for _ in range(2):
        pool.submit(lambda: met.append(together.wait() >= 0))
    _wait_until(lambda: len(met) == 2)
    assert pool.threads == 2


def test_after_a_backlog_idle_threads_end_and_are_started_again(workers):
    pool = workers(2, idle_seconds=0.2)
    gate, done = _held(pool, 5)
    gate.set()
    _wait_until(lambda: len(done) == 5)
    _wait_until(lambda: pool.threads == 0)
    # Had the queued tasks been counted as idle threads, this one would wait for a thread that is not there.
    again = threading.Event()
    pool.submit(again.set)
    assert again.wait(WAIT)


def test_idle_threads_are_reused_rather_than_new_ones_started(workers):
    pool = workers(16)
    done: list[int] = []
    for index in range(50):
        pool.submit(lambda index=index: done.append(index))
        _wait_until(lambda index=index: len(done) == index + 1)
    assert pool.threads == 1


def test_a_task_that_raises_is_logged_and_its_thread_goes_on(workers, caplog):
    pool = workers(1)
    done = threading.Event()

    def fail() -> None:
        raise ValueError("boom")

    pool.submit(fail)
    pool.submit(done.set)
    assert done.wait(WAIT)
    assert "a worker's task failed" in caplog.text
    assert pool.threads == 1


def test_shutdown_runs_what_was_queued_then_ends_every_thread_and_refuses_more(workers):
    pool = workers(2)
    gate, done = _held(pool, 4)
    pool.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(lambda: None)
    gate.set()
    _wait_until(lambda: pool.threads == 0)
    assert sorted(done) == [0, 1, 2, 3]


def test_at_least_one_thread_is_required():
    with pytest.raises(ValueError, match="at least 1"):
        Workers(0, "test")
