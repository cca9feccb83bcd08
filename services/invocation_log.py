"""The record of every invocation: journaled locally on the call's path, shipped to the database off it."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydal import DAL

from services.database import Database
from services.domain import InvocationType
from services.errors import DatabaseUnavailable, JournalFull
from services.idempotency import (
    PURGE_BATCH,
    EarlierInvocation,
    KeyClaim,
    claim_in,
    peek_in,
    purge_in,
    release_in,
)
from services.journal import Journal
from services.shipper import SHIP_INTERVAL_SECONDS, Shipper, write_batch

# Expired idempotency claims are purged at most this often, by a keyed request that finds the time has come.
_PURGE_INTERVAL_SECONDS = 60.0

logger = logging.getLogger(__name__)


def utc_now() -> datetime:
    """Now, in UTC, without tzinfo (the columns are TIMESTAMP without time zone, always UTC)."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class InvocationStart:
    """What is known before Lambda is called."""

    invocation_id: str
    function_name: str
    invocation_type: InvocationType
    payload: str
    alias: str | None
    version: str | None
    caller: str
    transport: str
    invoked_at: datetime
    idempotency_key: str | None = None
    x_request_id: str | None = None


@dataclass(frozen=True)
class InvocationOutcome:
    """How an invocation ended: Lambda's answer, or the error that stopped it."""

    success: bool
    completed_at: datetime
    duration_ms: float
    status_code: int | None = None
    response_payload: str | None = None
    function_error: str | None = None
    executed_version: str | None = None
    request_id: str | None = None
    error_message: str | None = None
    error_code: str | None = None
    log_tail: str | None = None


@dataclass(frozen=True)
class JournalState:
    """What /health and gRPC health show of the record path."""

    # The database took the last batch it was offered (or nothing has been offered yet).
    database_ok: bool
    # Bytes written to the journal that the database does not hold yet, and the age of the oldest of them.
    unshipped_bytes: int
    lag_seconds: float
    # The journal cannot take new invocations: they are refused rather than run unrecorded.
    full: bool
    max_bytes: int


class InvocationLog:
    """Records every invocation: in the local journal first, then (shipped in batches) in the database."""

    def __init__(self, database: Database, journal: Journal, *, ship_interval: float = SHIP_INTERVAL_SECONDS) -> None:
        self._database = database
        self._journal = journal
        self._shipper = Shipper(journal, database, interval=ship_interval)
        self._next_purge = 0.0
        self._purging: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Open the journal (adopting what ended processes left) and start shipping."""
        await asyncio.to_thread(self._journal.open)
        self._shipper.start()

    def check_room(self) -> None:
        """JournalFull when a new invocation could not be recorded."""
        self._journal.check_room()

    def record_start(self, record: InvocationStart) -> None:
        """Journal the start of an invocation (before Lambda is called); OSError when the journal cannot be written.

        Blocking: called by the thread that then calls Lambda.
        """
        self._journal.append_start(_start_entry(record))

    def write_outcome(self, record: InvocationStart, outcome: InvocationOutcome) -> int:
        """Hand the journal how an invocation ended, not yet written nor durable (the fdatasync that makes it durable
        writes it); the position to give `when_outcome_durable`.

        Called by the thread that called Lambda, right after its answer. OSError when the journal is closed (see
        `record_directly`).
        """
        return self._journal.append_outcome_later(_outcome_entry(record, outcome))

    def when_outcome_durable(
        self, position: int, loop: asyncio.AbstractEventLoop, then: Callable[[OSError | None], None]
    ) -> None:
        """From the thread that wrote the outcome: have `loop` call `then(None)` once it is durable, or `then(error)`
        when it cannot be made so (see `record_directly`). One wake of the loop settles every outcome synced together.
        """
        self._journal.when_durable(position, loop, then)

    async def record_outcome(self, record: InvocationStart, outcome: InvocationOutcome) -> None:
        """Journal how an invocation ended and return once that is durable; never raises.

        If the journal cannot be written, the whole record goes to the database directly: an answered invocation
        always has its record.
        """
        try:
            await self._journal.append_outcome(_outcome_entry(record, outcome))
        except Exception as error:
            logger.error(
                "the journal did not take the outcome of %s (%s); writing it directly", record.invocation_id, error
            )
            await self.record_directly(record, outcome)

    async def record_whole(self, record: InvocationStart, outcome: InvocationOutcome) -> None:
        """Journal an invocation that never reached Lambda (refused), start and outcome at once; never raises."""
        try:
            await self._journal.append_whole(_start_entry(record), _outcome_entry(record, outcome))
        except Exception as error:
            logger.error(
                "the journal did not take refused invocation %s (%s); writing it directly", record.invocation_id, error
            )
            await self.record_directly(record, outcome)

    async def record_directly(self, record: InvocationStart, outcome: InvocationOutcome) -> None:
        """Write the whole record to the database, bypassing the journal (it could not take it); never raises."""
        try:
            whole = [_start_entry(record), _outcome_entry(record, outcome)]
            await self._database.run(functools.partial(write_batch, entries=whole))
        except Exception as direct_error:
            logger.critical("the outcome of invocation %s is lost: %s", record.invocation_id, direct_error)

    async def claim_key(self, claim: KeyClaim, window_seconds: float) -> EarlierInvocation | None:
        """Claim an idempotency key for an invocation about to start: None when claimed, else who holds it.

        DatabaseUnavailable when the database cannot say: then no replica could tell a repeat from a new request.
        """
        if not self._shipper.database_ok:
            # Fail at once rather than wait out a connection timeout the shipper already met.
            raise DatabaseUnavailable(
                "a request with an Idempotency-Key cannot be checked while the database is unreachable; retry "
                "shortly, or send it without the key"
            )
        try:
            earlier = await self._database.run(lambda db: claim_in(db, claim, utc_now(), window_seconds))
        except DatabaseUnavailable as error:
            raise DatabaseUnavailable(
                "a request with an Idempotency-Key cannot be checked while the database is unreachable; retry "
                "shortly, or send it without the key"
            ) from error
        self._purge_now_and_then(window_seconds)
        return earlier

    async def release_key(self, claim: KeyClaim) -> None:
        """Give a key up after its invocation ended without running the function; never raises (a claim left
        behind is taken over once the invocation's record shows how it ended)."""
        try:
            await self._database.run(lambda db: release_in(db, claim))
        except Exception as error:
            logger.warning("could not release idempotency key of invocation %s: %s", claim.invocation_id, error)

    async def peek_key(self, caller: str, key: str, window_seconds: float) -> EarlierInvocation | None:
        """The unexpired claim on a key, if any (DatabaseUnavailable when the database cannot say)."""
        return await self._database.run(lambda db: peek_in(db, caller, key, utc_now(), window_seconds))

    def _purge_now_and_then(self, window_seconds: float) -> None:
        now = time.monotonic()
        if now < self._next_purge or (self._purging is not None and not self._purging.done()):
            return
        self._next_purge = now + _PURGE_INTERVAL_SECONDS
        self._purging = asyncio.ensure_future(self._purge(window_seconds))

    async def _purge(self, window_seconds: float) -> None:
        try:
            # Bounded batches, each its own transaction, until one comes back short.
            deleted = PURGE_BATCH
            while deleted >= PURGE_BATCH:
                deleted = await self._database.run(lambda db: purge_in(db, utc_now(), window_seconds))
        except Exception as error:
            logger.warning("could not purge expired idempotency keys: %s", error)

    def state(self) -> JournalState:
        """The record path's state right now."""
        full = False
        try:
            self._journal.check_room()
        except JournalFull:
            full = True
        return JournalState(
            database_ok=self._shipper.database_ok,
            unshipped_bytes=self._journal.unshipped_bytes(),
            lag_seconds=round(self._journal.lag_seconds(), 3),
            full=full,
            max_bytes=self._journal.max_bytes,
        )

    async def flush(self, within_seconds: float = 10.0) -> bool:
        """Ship every entry written so far; False when the database did not take them `within_seconds`."""
        return await self._shipper.flush(within_seconds)

    async def ping(self) -> bool:
        """True when the database answers."""
        return await self._database.ping()

    async def get(self, invocation_id: str) -> dict | None:
        """The database's record of one invocation as a dict, or None (entries still in the journal are not seen)."""
        return await self._database.run(lambda db: _select_one(db, invocation_id))

    async def close(self, within_seconds: float = 5.0) -> None:
        """Ship what can be shipped `within_seconds`, then release the journal (the rest waits for the next start)."""
        await self._shipper.stop()
        if self._purging is not None:
            await asyncio.gather(self._purging, return_exceptions=True)
        if not await self._shipper.flush(within_seconds):
            logger.warning(
                "%d bytes of invocation records stay in the journal %s until the next start",
                self._journal.unshipped_bytes(),
                self._journal.spool_dir,
            )
        await asyncio.to_thread(self._journal.close)


def _start_entry(record: InvocationStart) -> dict[str, Any]:
    return {
        "kind": "start",
        "invocation_id": record.invocation_id,
        "function_name": record.function_name,
        "invocation_type": record.invocation_type,
        "payload": record.payload,
        "alias": record.alias,
        "version": record.version,
        "caller": record.caller,
        "transport": record.transport,
        "invoked_at": record.invoked_at.isoformat(),
        "idempotency_key": record.idempotency_key,
        "x_request_id": record.x_request_id,
    }


def _outcome_entry(record: InvocationStart, outcome: InvocationOutcome) -> dict[str, Any]:
    return {
        "kind": "outcome",
        "invocation_id": record.invocation_id,
        "success": outcome.success,
        "completed_at": outcome.completed_at.isoformat(),
        "duration_ms": outcome.duration_ms,
        "status_code": outcome.status_code,
        "response_payload": outcome.response_payload,
        "function_error": outcome.function_error,
        "executed_version": outcome.executed_version,
        "request_id": outcome.request_id,
        "error_message": outcome.error_message,
        "error_code": outcome.error_code,
        "log_tail": outcome.log_tail,
    }


def _select_one(db: DAL, invocation_id: str) -> dict | None:
    table = db.lambda_invocations
    row = db(table.invocation_id == invocation_id).select(limitby=(0, 1)).first()
    return row.as_dict() if row else None
