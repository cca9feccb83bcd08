"""Concurrency as Lambda counts it: a runtime-wide pool shared by unreserved functions, and reservations.

As in an AWS account: a function whose manifest reserves concurrency (`concurrency`, Lambda's
ReservedConcurrentExecutions) runs at most that many calls at once, and has them whatever the others do; the
functions without a reservation share what is left of the runtime-wide limit (LOCAL_LAMBDA_MAX_CONCURRENCY minus
the reservations). A call over the limit is refused at once with TooManyRequestsException and Lambda's Reason:
ReservedFunctionConcurrentInvocationLimitExceeded for a reservation, ConcurrentInvocationLimitExceeded for the
shared pool. Event invocations wait for a slot instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter

from local_lambda.errors import TooManyRequests

logger = logging.getLogger(__name__)

RESERVED_LIMIT_REASON = "ReservedFunctionConcurrentInvocationLimitExceeded"
SHARED_LIMIT_REASON = "ConcurrentInvocationLimitExceeded"


class ConcurrencySlot:
    """One call's place in the count; `release()` gives it back (once, however often called)."""

    def __init__(self, limits: ConcurrencyLimits, function_name: str, reserved: bool) -> None:
        self._limits = limits
        self.function_name = function_name
        self.reserved = reserved
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._limits._release(self)


class ConcurrencyLimits:
    """Counts the calls running, per function and across unreserved functions, and admits or refuses new ones."""

    def __init__(self, max_concurrency: int) -> None:
        self.max_concurrency = max_concurrency
        self._running: Counter[str] = Counter()
        self._unreserved_running = 0
        self._freed = asyncio.Event()
        self._overbooked_reported: int | None = None

    def shared_pool(self, reserved_total: int) -> int:
        """How many calls unreserved functions may run at once: the limit less what functions reserve."""
        pool = max(0, self.max_concurrency - reserved_total)
        if pool == 0 and self._overbooked_reported != reserved_total:
            self._overbooked_reported = reserved_total
            logger.warning(
                "functions reserve %d concurrency, all of the runtime's %d: every function without a reservation "
                "is throttled (raise LOCAL_LAMBDA_MAX_CONCURRENCY or lower the reservations)",
                reserved_total,
                self.max_concurrency,
            )
        return pool

    def take(self, function_name: str, reservation: int | None, reserved_total: int) -> ConcurrencySlot:
        """A slot for one call, or TooManyRequests with Lambda's Reason when the function or the pool is full."""
        if reservation is not None:
            if self._running[function_name] >= reservation:
                raise TooManyRequests("Rate Exceeded.", reason=RESERVED_LIMIT_REASON)
        elif self._unreserved_running >= self.shared_pool(reserved_total):
            raise TooManyRequests("Rate Exceeded.", reason=SHARED_LIMIT_REASON)
        self._running[function_name] += 1
        if reservation is None:
            self._unreserved_running += 1
        return ConcurrencySlot(self, function_name, reserved=reservation is not None)

    async def wait_for(
        self, function_name: str, reservation: int | None, reserved_total: int, wait_seconds: float
    ) -> ConcurrencySlot:
        """Like `take`, but wait up to `wait_seconds` for a slot (Event invocations are queued, as on Lambda)."""
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                return self.take(function_name, reservation, reserved_total)
            except TooManyRequests:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise
            with contextlib.suppress(TimeoutError):  # then one last try above, refused if still full
                async with asyncio.timeout(remaining):
                    await self._freed.wait()

    def running(self, function_name: str) -> int:
        """How many calls of a function run now."""
        return self._running[function_name]

    def _release(self, slot: ConcurrencySlot) -> None:
        self._running[slot.function_name] -= 1
        if self._running[slot.function_name] <= 0:
            del self._running[slot.function_name]
        if not slot.reserved:
            self._unreserved_running -= 1
        # Wake every waiter to try again; a fresh event for the next wait.
        freed, self._freed = self._freed, asyncio.Event()
        freed.set()
