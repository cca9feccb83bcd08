"""Prometheus metrics of one process (or, with WORKERS > 1, of every worker: prometheus-client's multiprocess mode).

Each Metrics object has a registry of its own, so every module built in one process (tests build many) counts
from zero. In multiprocess mode (PROMETHEUS_MULTIPROC_DIR set before prometheus-client is imported, as the parent
of the workers does) values live in that folder and a scrape of any worker adds up all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from services.invocation_log import JournalState

logger = logging.getLogger(__name__)

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# From a warm echo (a millisecond) to Lambda's longest run (15 minutes).
DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    900.0,
)
# How often the journal's gauges are refreshed from its state.
SAMPLE_INTERVAL_SECONDS = 1.0


def multiprocess_dir() -> str | None:
    """The multiprocess folder this process writes its values to, if any."""
    return os.environ.get(MULTIPROCESS_DIR_VARIABLE) or None


def prepare_multiprocess_dir(path: Path) -> None:
    """An empty folder for the workers' values (the parent's job, before any worker starts): values a previous
    run left would be added to this one's."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


class Metrics:
    """The module's metrics; `render()` is what GET /metrics answers."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # Each gauge says how a multiprocess scrape adds up the workers' values (ignored in one process): in flight
        # sums over the live workers; the journal's lag is the worst of them; the database is up if up for all.
        self.invocations = Counter(
            "lambda_action_invocations",
            "Invocations that ended, by function, type, transport and outcome (success, function_error, or the "
            "error code of a failure)",
            ["function_name", "invocation_type", "transport", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "lambda_action_invocation_duration_seconds",
            "Time from the invocation's start to Lambda's answer, of the invocations Lambda answered",
            ["function_name", "invocation_type"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "lambda_action_invocations_in_flight",
            "Invocations under way",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.retries = Counter(
            "lambda_action_lambda_retries",
            "Calls to Lambda sent again after a failure that proved the function did not run, by that failure",
            ["reason"],
            registry=self.registry,
        )
        self.refused = Counter(
            "lambda_action_refused",
            "Invocations refused or throttled without running, by error code (the module's cap, Lambda's "
            "throttling, a function out of reach, a full journal, an idempotency key in use)",
            ["code"],
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "lambda_action_auth_failures",
            "Refused authentications (token requests and bearer tokens), by reason",
            ["reason"],
            registry=self.registry,
        )
        self.journal_unshipped = Gauge(
            "lambda_action_journal_unshipped_bytes",
            "Bytes of invocation records in the local journal not yet in the database",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.journal_lag = Gauge(
            "lambda_action_journal_lag_seconds",
            "Age of the oldest record not yet shipped to the database",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.journal_full = Gauge(
            "lambda_action_journal_full",
            "1 while the journal is full and invocations are refused",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.database_up = Gauge(
            "lambda_action_database_up",
            "1 while the database takes the shipped records",
            registry=self.registry,
            multiprocess_mode="livemin",
        )
        self._sampling: asyncio.Task[None] | None = None
        # The labelled series of invocation_ended, by its labels: `labels()` checks and looks them up under a lock,
        # a cost on every invocation's path that a dict lookup avoids. Bounded like the series themselves.
        self._ended: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}

    def invocation_ended(
        self,
        function_name: str,
        invocation_type: str,
        transport: str,
        outcome: str,
        duration_seconds: float | None,
    ) -> None:
        """One invocation that ended: `duration_seconds` when Lambda answered it."""
        key = (function_name, invocation_type, transport, outcome)
        counted = self._ended.get(key)
        if counted is None:
            counted = self._ended[key] = (
                self.invocations.labels(*key),
                self.duration.labels(function_name, invocation_type),
            )
        counted[0].inc()
        if duration_seconds is not None:
            counted[1].observe(duration_seconds)

    def sample_journal(self, state: JournalState) -> None:
        """Set the journal's gauges from its state."""
        self.journal_unshipped.set(state.unshipped_bytes)
        self.journal_lag.set(state.lag_seconds)
        self.journal_full.set(1 if state.full else 0)
        self.database_up.set(1 if state.database_ok else 0)

    def start_sampling(self, state: Callable[[], JournalState], interval: float = SAMPLE_INTERVAL_SECONDS) -> None:
        """Refresh the journal's gauges every `interval` seconds in the background."""

        async def sample() -> None:
            while True:
                try:
                    self.sample_journal(state())
                except Exception as error:
                    logger.debug("could not sample the journal's state: %s", error)
                await asyncio.sleep(interval)

        if self._sampling is None:
            self._sampling = asyncio.ensure_future(sample())

    async def close(self) -> None:
        """Stop sampling; in multiprocess mode, let the live gauges forget this process."""
        if self._sampling is not None:
            self._sampling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampling
            self._sampling = None
        if multiprocess_dir() is not None:
            mark_process_dead(os.getpid())

    def render(self) -> bytes:
        """The text exposition of every metric (every worker's, in multiprocess mode)."""
        if multiprocess_dir() is None:
            return generate_latest(self.registry)
        combined = CollectorRegistry()
        MultiProcessCollector(combined)
        return generate_latest(combined)
