"""Workers: the threads that call Lambda, fed through one queue, without a future per task.

`ThreadPoolExecutor.submit` builds a `concurrent.futures.Future` (with its condition and lock) and a work item for
every call, and `run_in_executor` wraps that future in an asyncio one: costs paid on the event loop's thread, for
every invocation, that this module does not need, since each invocation settles its own asyncio future (see
LambdaService._attempt_invocation). Here a task is a plain callable on a queue; a thread is started when a task
finds none idle, up to the limit, and a thread idle for a while ends.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

# An idle thread ends after this long without a task (the next burst starts threads again).
IDLE_SECONDS = 60.0

_STOP = None


class Workers:
    """Runs callables on up to `max_threads` threads; `submit` never blocks and never waits for a thread."""

    def __init__(self, max_threads: int, name: str, *, idle_seconds: float = IDLE_SECONDS) -> None:
        if max_threads < 1:
            raise ValueError("max_threads must be at least 1")
        self._max_threads = max_threads
        self._name = name
        self._idle_seconds = idle_seconds
        self._tasks: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        # Threads waiting for a task that no submitted task has counted on yet, and tasks queued that no thread has:
        # a task submitted while no thread is idle starts one, up to the limit, else waits for the next to be free.
        self._idle = 0
        self._pending = 0
        self._started = 0
        self._closed = False

    @property
    def threads(self) -> int:
        """Threads running now."""
        return len(self._threads)

    def submit(self, task: Callable[[], None]) -> None:
        """Run `task()` on a worker thread. It must handle its own errors (one that escapes is logged).

        RuntimeError once `shutdown` has been called.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("the workers are shut down")
            if self._idle > 0:
                self._idle -= 1
            elif len(self._threads) < self._max_threads:
                self._started += 1
                thread = threading.Thread(target=self._work, name=f"{self._name}_{self._started}", daemon=True)
                self._threads.add(thread)
                thread.start()
            else:
                self._pending += 1
        self._tasks.put(task)

    def shutdown(self) -> None:
        """Take no more tasks; each thread ends once the tasks queued before this are done."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = len(self._threads)
        for _ in range(threads):
            self._tasks.put(_STOP)

    def _work(self) -> None:
        me = threading.current_thread()
        try:
            while True:
                try:
                    task = self._tasks.get(timeout=self._idle_seconds)
                except queue.Empty:
                    with self._lock:
                        # Idle for long: end, unless a task was counted on this thread meanwhile.
                        if self._idle > 0 and not self._closed:
                            self._idle -= 1
                            return
                    continue
                if task is _STOP:
                    return
                try:
                    task()
                except BaseException:
                    logger.exception("a worker's task failed")
                with self._lock:
                    if self._pending > 0:
                        self._pending -= 1  # the next task queued is this thread's
                    else:
                        self._idle += 1
        finally:
            with self._lock:
                self._threads.discard(me)
