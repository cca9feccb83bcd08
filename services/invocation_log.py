"""The record of every invocation: a row written before Lambda is called and completed after."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from pydal import DAL

from services.database import Database
from services.domain import InvocationType

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


class InvocationLog:
    """Writes invocation records; a failed write is logged, never raised to the caller."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def start(self, record: InvocationStart) -> bool:
        """Write the started-but-not-finished row; False when the database did not take it."""
        try:
            await self._database.run(lambda db: db.lambda_invocations.insert(**_start_fields(record)))
            return True
        except Exception as exc:
            logger.error("could not record the start of invocation %s: %s", record.invocation_id, exc)
            return False

    async def finish(self, record: InvocationStart, outcome: InvocationOutcome) -> bool:
        """Complete the row (or write it whole, if its start was never recorded); False on failure."""
        try:
            await self._database.run(lambda db: _write_outcome(db, record, outcome))
            return True
        except Exception as exc:
            logger.error("could not record the outcome of invocation %s: %s", record.invocation_id, exc)
            return False

    async def ping(self) -> bool:
        """True when the database answers."""
        return await self._database.ping()

    async def get(self, invocation_id: str) -> dict | None:
        """The record of one invocation as a dict, or None."""
        return await self._database.run(lambda db: _select_one(db, invocation_id))


def _start_fields(record: InvocationStart) -> dict:
    return {
        "invocation_id": record.invocation_id,
        "function_name": record.function_name,
        "invocation_type": record.invocation_type,
        "payload": record.payload,
        "alias": record.alias,
        "version": record.version,
        "caller": record.caller,
        "transport": record.transport,
        "invoked_at": record.invoked_at,
    }


def _write_outcome(db: DAL, record: InvocationStart, outcome: InvocationOutcome) -> None:
    fields = {
        "success": outcome.success,
        "completed_at": outcome.completed_at,
        "duration_ms": outcome.duration_ms,
        "status_code": outcome.status_code,
        "response_payload": outcome.response_payload,
        "function_error": outcome.function_error,
        "executed_version": outcome.executed_version,
        "request_id": outcome.request_id,
        "error_message": outcome.error_message,
        "error_code": outcome.error_code,
    }
    table = db.lambda_invocations
    updated = db(table.invocation_id == record.invocation_id).update(**fields)
    if not updated:
        table.insert(**_start_fields(record), **fields)


def _select_one(db: DAL, invocation_id: str) -> dict | None:
    table = db.lambda_invocations
    row = db(table.invocation_id == invocation_id).select(limitby=(0, 1)).first()
    return row.as_dict() if row else None
