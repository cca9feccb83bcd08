"""Event invocations as Lambda runs them: queued, retried when they fail, and kept when they fail for good.

Lambda answers an Event invocation 202 at once and runs it later. When the function returns an error (its own,
a timeout, a crash), Lambda tries again, at most MaximumRetryAttempts more times (0 to 2, default 2), about a
minute after the first attempt and two minutes after the second; an event older than MaximumEventAgeInSeconds
(60 to 21600, default 21600) is not tried again. An event that failed for good goes to the function's on-failure
destination; here, to a file in the runtime's dead-letter folder, holding the record Lambda sends there:

    {"version": "1.0", "timestamp": "...",
     "requestContext": {"requestId": ..., "functionArn": ..., "condition": "RetriesExhausted" or "EventAgeExceeded",
                        "approximateInvokeCount": 3},
     "requestPayload": <the event>,
     "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
     "responsePayload": <the error the function answered>}

An event waiting for a free worker (all busy, or the function's reservation reached) waits in the queue, as
Lambda's throttled events do; that waiting is not an attempt.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from local_lambda.concurrency import RESERVED_LIMIT_REASON, SHARED_LIMIT_REASON
from local_lambda.errors import LambdaApiError, TooManyRequests
from local_lambda.pool import HandlerOutcome
from local_lambda.registry import ResolvedFunction, function_arn

logger = logging.getLogger(__name__)

# Past this many events waiting for one function, new ones are refused, so that a stuck function cannot make the
# runtime hold payloads without end.
MAX_QUEUED_EVENTS = 1000

# Runs one attempt: the event's function, request id, payload, client context, trace header, and how long it may
# wait for a free worker; TooManyRequests when none was free in that time.
EventRunner = Callable[[ResolvedFunction, str, bytes, str | None, str, float], Awaitable[HandlerOutcome]]


@dataclass(frozen=True)
class EventInvokeConfig:
    """What GetFunctionEventInvokeConfig reports of a function."""

    function_arn: str
    maximum_retry_attempts: int
    maximum_event_age_seconds: int
    last_modified: float  # when the manifest setting them last changed, in seconds since the epoch


@dataclass(frozen=True)
class _Event:
    resolved: ResolvedFunction
    request_id: str
    payload: bytes
    client_context: str | None
    trace_id: str
    received: float  # time.monotonic() when it was queued


class EventQueue:
    """Runs Event invocations in the background with Lambda's retries, and writes those that fail for good."""

    def __init__(self, run: EventRunner, region: str, retry_delays: tuple[float, float], dead_letter_dir: Path) -> None:
        self._run = run
        self._region = region
        self._retry_delays = retry_delays
        self.dead_letter_dir = dead_letter_dir
        self._tasks: set[asyncio.Task[None]] = set()
        self._queued: Counter[str] = Counter()

    @property
    def pending(self) -> int:
        """How many events are queued, running or waiting to be retried."""
        return len(self._tasks)

    def queue(
        self, resolved: ResolvedFunction, request_id: str, payload: bytes, client_context: str | None, trace_id: str
    ) -> None:
        """Accept an event to run in the background; TooManyRequests when too many wait for this function."""
        name = resolved.manifest.name
        if self._queued[name] >= MAX_QUEUED_EVENTS:
            reserved = resolved.manifest.reserved_concurrency is not None
            raise TooManyRequests("Rate Exceeded.", reason=RESERVED_LIMIT_REASON if reserved else SHARED_LIMIT_REASON)
        self._queued[name] += 1
        event = _Event(resolved, request_id, payload, client_context, trace_id, time.monotonic())
        task = asyncio.create_task(self._deliver(event), name=f"event {request_id} of {name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Drop the events still queued or waiting to be retried."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _deliver(self, event: _Event) -> None:
        manifest = event.resolved.manifest
        try:
            attempts = 0
            outcome: HandlerOutcome | None = None
            while True:
                remaining_age = manifest.maximum_event_age_seconds - (time.monotonic() - event.received)
                if remaining_age <= 0:
                    self._give_up(event, "EventAgeExceeded", attempts, outcome)
                    return
                try:
                    attempt = await self._attempt(event, remaining_age)
                except TooManyRequests:  # no worker was free before the event grew too old: not an attempt
                    self._give_up(event, "EventAgeExceeded", attempts, outcome)
                    return
                attempts, outcome = attempts + 1, attempt
                if outcome.function_error is None:
                    return
                logger.warning(
                    "Event invocation %s of %s failed (attempt %d): %s",
                    event.request_id,
                    manifest.name,
                    attempts,
                    outcome.payload[:1000],
                )
                if attempts > manifest.maximum_retry_attempts:
                    self._give_up(event, "RetriesExhausted", attempts, outcome)
                    return
                delay = self._retry_delays[min(attempts, len(self._retry_delays)) - 1]
                remaining_age = manifest.maximum_event_age_seconds - (time.monotonic() - event.received)
                await asyncio.sleep(max(0.0, min(delay, remaining_age)))
        except Exception:
            logger.exception("Event invocation %s of %s could not be delivered", event.request_id, manifest.name)
        finally:
            self._queued[manifest.name] -= 1

    async def _attempt(self, event: _Event, worker_wait_seconds: float) -> HandlerOutcome:
        try:
            return await self._run(
                event.resolved,
                event.request_id,
                event.payload,
                event.client_context,
                event.trace_id,
                worker_wait_seconds,
            )
        except TooManyRequests:
            raise
        except LambdaApiError as error:  # the function cannot run as it stands (a broken manifest, no worker)
            body = {"errorMessage": error.message, "errorType": error.error_type}
            return HandlerOutcome(json.dumps(body).encode(), "Unhandled", b"", 0.0, None, None)

    def _give_up(self, event: _Event, condition: str, attempts: int, outcome: HandlerOutcome | None) -> None:
        record = failure_record(
            event.request_id,
            function_arn(self._region, event.resolved.manifest.name, event.resolved.version.version),
            condition,
            attempts,
            event.payload,
            event.resolved.version.version,
            outcome,
        )
        path = write_failure_record(self.dead_letter_dir, event.resolved.manifest.name, event.request_id, record)
        logger.warning(
            "Event invocation %s of %s failed for good (%s after %d attempts): written to %s",
            event.request_id,
            event.resolved.manifest.name,
            condition,
            attempts,
            path,
        )


def failure_record(
    request_id: str,
    function_arn_: str,
    condition: str,
    attempts: int,
    payload: bytes,
    executed_version: str,
    outcome: HandlerOutcome | None,
) -> dict[str, Any]:
    """The record Lambda sends an on-failure destination for an Event invocation that failed for good."""
    record: dict[str, Any] = {
        "version": "1.0",
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "requestContext": {
            "requestId": request_id,
            "functionArn": function_arn_,
            "condition": condition,
            "approximateInvokeCount": attempts,
        },
        "requestPayload": _json_or_text(payload),
    }
    if outcome is not None:
        record["responseContext"] = {
            "statusCode": 200,
            "executedVersion": executed_version,
            "functionError": outcome.function_error or "Unhandled",
        }
        record["responsePayload"] = _json_or_text(outcome.payload)
    return record


def write_failure_record(dead_letter_dir: Path, function_name: str, request_id: str, record: dict[str, Any]) -> Path:
    """Write one failed event's record as its own file, named so that a listing sorts them by time; its path."""
    dead_letter_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    path = dead_letter_dir / f"{stamp}-{function_name}-{request_id}.json"
    staged = dead_letter_dir / f".{path.name}.writing"
    staged.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(staged, path)  # a reader of the folder never sees a half-written record
    return path


def _json_or_text(payload: bytes) -> Any:
    try:
        return json.loads(payload or b"null")
    except (ValueError, RecursionError):
        return payload.decode(errors="replace")
