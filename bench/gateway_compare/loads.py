"""Closed-loop loads: N callers, each sending its next call when the last is answered, for a time or a count.

Rounds of every path are interleaved, in an order that rotates each round, so that whatever else the machine
does at the time weighs on every path alike.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from gateway_compare.callers import CallPath, DirectPath
from gateway_compare.children import cpu_seconds


@dataclass
class Run:
    """What callers measured on one path: calls answered, errors, time taken, latencies, the server's CPU."""

    calls: int = 0
    errors: int = 0
    first_error: str = ""
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    server_cpu_seconds: float | None = None

    def add(self, other: Run) -> None:
        """Fold another round of the same path into this one."""
        self.calls += other.calls
        self.errors += other.errors
        self.first_error = self.first_error or other.first_error
        self.seconds += other.seconds
        self.latencies_ms.extend(other.latencies_ms)
        if other.server_cpu_seconds is not None:
            self.server_cpu_seconds = (self.server_cpu_seconds or 0.0) + other.server_cpu_seconds

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def percentile_ms(self, fraction: float) -> float:
        """The nearest-rank percentile of the latencies (0 when there are none)."""
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]

    @property
    def cpu_ms_per_call(self) -> float | None:
        if self.server_cpu_seconds is None or not self.calls:
            return None
        return self.server_cpu_seconds * 1000 / self.calls

    def summary(self) -> dict[str, object]:
        """The figures of the run, for the JSON report."""
        return {
            "calls": self.calls,
            "errors": self.errors,
            "first_error": self.first_error or None,
            "seconds": round(self.seconds, 3),
            "calls_per_s": round(self.calls_per_second, 1),
            "p50_ms": round(self.percentile_ms(0.50), 3),
            "p99_ms": round(self.percentile_ms(0.99), 3),
            "mean_ms": round(sum(self.latencies_ms) / len(self.latencies_ms), 3) if self.latencies_ms else 0.0,
            "server_cpu_ms_per_call": None if self.cpu_ms_per_call is None else round(self.cpu_ms_per_call, 3),
        }


class _Budget:
    """When the callers stop: at a deadline, or once `calls` calls have been started."""

    def __init__(self, seconds: float | None, calls: int | None) -> None:
        if (seconds is None) == (calls is None):
            raise ValueError("give seconds or calls, not both")
        self._seconds = seconds
        self._calls = calls
        self._started = itertools.count()  # next() on a count is atomic under the GIL: threads share it safely
        self._deadline = 0.0

    def begin(self) -> None:
        if self._seconds is not None:
            self._deadline = time.perf_counter() + self._seconds

    def another(self) -> bool:
        if self._calls is not None:
            return next(self._started) < self._calls
        return time.perf_counter() < self._deadline


async def run_load(
    path: CallPath, function: str, callers: int, *, seconds: float | None = None, calls: int | None = None
) -> Run:
    """`callers` callers on `path` for `seconds`, or until `calls` calls; the server's CPU time over the run."""
    budget = _Budget(seconds, calls)
    pid = path.server.child.pid if path.server is not None else None
    cpu_before = cpu_seconds(pid) if pid is not None else 0.0
    if isinstance(path, DirectPath):
        run = await asyncio.to_thread(_threads, path.invoke_blocking, function, callers, budget)
    else:
        run = await _tasks(path.invoke, function, callers, budget)
    if pid is not None:
        run.server_cpu_seconds = cpu_seconds(pid) - cpu_before
    return run


async def _tasks(invoke: Callable[[str], Awaitable[None]], function: str, callers: int, budget: _Budget) -> Run:
    run = Run()

    async def caller() -> None:
        while budget.another():
            started = time.perf_counter()
            try:
                await invoke(function)
            except Exception as error:
                run.errors += 1
                run.first_error = run.first_error or f"{type(error).__name__}: {error}"
                continue
            run.latencies_ms.append((time.perf_counter() - started) * 1000)
            run.calls += 1

    began = time.perf_counter()
    budget.begin()
    await asyncio.gather(*(caller() for _ in range(callers)))
    run.seconds = time.perf_counter() - began
    return run


def _threads(invoke: Callable[[str], None], function: str, callers: int, budget: _Budget) -> Run:
    runs = [Run() for _ in range(callers)]
    began: list[float] = []

    def start_clock() -> None:
        began.append(time.perf_counter())
        budget.begin()

    ready = threading.Barrier(callers, action=start_clock)

    def caller(run: Run) -> None:
        ready.wait()
        while budget.another():
            started = time.perf_counter()
            try:
                invoke(function)
            except Exception as error:
                run.errors += 1
                run.first_error = run.first_error or f"{type(error).__name__}: {error}"
                continue
            run.latencies_ms.append((time.perf_counter() - started) * 1000)
            run.calls += 1

    threads = [threading.Thread(target=caller, args=(run,), name="bench-caller") for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = Run()
    for run in runs:
        total.add(run)
    total.seconds = time.perf_counter() - began[0]
    return total


async def interleaved(
    paths: Sequence[CallPath],
    function: str,
    callers: int,
    rounds: int,
    *,
    seconds: float | None = None,
    calls: int | None = None,
    warmup_calls: int = 0,
    after_each: Callable[[], None] | None = None,
) -> dict[str, Run]:
    """`rounds` rounds of the load on every path, interleaved; per path, the rounds folded into one Run.

    First, unmeasured, `warmup_calls` calls per path from the same callers: connections open, the runtime's
    workers start, and every server has its caches and threads before the clock runs.
    """
    if warmup_calls:
        for path in paths:
            await run_load(path, function, callers, calls=warmup_calls)
    totals = {path.key: Run() for path in paths}
    for number in range(rounds):
        shift = number % len(paths)
        for path in [*paths[shift:], *paths[:shift]]:
            totals[path.key].add(await run_load(path, function, callers, seconds=seconds, calls=calls))
            if after_each is not None:
                after_each()
    return totals
