"""The shipper: copies journal entries to `lambda_invocations` in batches, idempotently, and trims what it shipped.

A batch is one transaction. An invocation's start and outcome that arrive together become one row; an entry
replayed after a crash finds its row already there and changes nothing that is recorded. While the database is
away the journal grows and the shipper retries with a growing pause; when it answers, the backlog drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from pydal import DAL

from services.database import Database, is_connection_error
from services.errors import DatabaseUnavailable
from services.journal import Entry, Journal, Segment

logger = logging.getLogger(__name__)

# Under normal conditions a record reaches the table within this long after its entry is written.
SHIP_INTERVAL_SECONDS = 0.2
BATCH_ENTRIES = 500
_MAX_PAUSE_SECONDS = 5.0
_STOP_WAIT_SECONDS = 5.0
# Entries the database refuses outright (not an outage) are kept here for an operator, and not retried.
REJECTED_FILE = "rejected.jsonl"

START_FIELDS = (
    "invocation_id",
    "function_name",
    "invocation_type",
    "payload",
    "alias",
    "version",
    "caller",
    "transport",
    "invoked_at",
    "idempotency_key",
    "x_request_id",
)
OUTCOME_FIELDS = (
    "success",
    "completed_at",
    "duration_ms",
    "status_code",
    "response_payload",
    "function_error",
    "executed_version",
    "request_id",
    "error_message",
    "error_code",
    "log_tail",
)
_DATETIME_FIELDS = ("invoked_at", "completed_at")


class Shipper:
    """Runs in the background of one process; `flush()` ships everything written so far."""

    def __init__(self, journal: Journal, database: Database, *, interval: float = SHIP_INTERVAL_SECONDS) -> None:
        self._journal = journal
        self._database = database
        self._interval = interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._lock = asyncio.Lock()
        self.database_ok = True
        self.last_error: str | None = None
        self.shipped_entries = 0

    def start(self) -> None:
        """Begin shipping in the background."""
        self._task = asyncio.ensure_future(self._run())

    def wake(self) -> None:
        """Ship soon (new entries were written)."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop the background loop (what is not shipped stays in the journal)."""
        # A flag as well as the cancel: asyncio.wait_for in Python 3.11 can swallow a cancellation that
        # arrives as its wait ends, and the loop must not go on after that.
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            # A batch being written is let finish (cancelling the wait would not stop its thread, and the same
            # batch would be offered again); one stuck on an unreachable database is abandoned.
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), _STOP_WAIT_SECONDS)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def flush(self, within_seconds: float) -> bool:
        """Ship until the journal holds nothing unshipped; False when `within_seconds` pass first."""
        deadline = time.monotonic() + within_seconds
        while self._journal.unshipped_bytes() > 0:
            if time.monotonic() >= deadline:
                return False
            try:
                await asyncio.wait_for(self.ship_once(), max(0.01, deadline - time.monotonic()))
            except (TimeoutError, DatabaseUnavailable):
                await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        return True

    async def ship_once(self) -> int:
        """Ship one batch; how many entries it held (0: nothing to ship). DatabaseUnavailable on an outage."""
        async with self._lock:
            if self._journal.unshipped_bytes() == 0:
                return 0
            try:
                # Read and write in one trip to a database thread: one hand-off per batch.
                entries, problems = await self._database.run(self._read_and_write)
                rejected: list[tuple[Entry, str]] = []
            except _BatchRefused as refused:
                entries, problems = refused.entries, refused.problems
                logger.error(
                    "the database refused a batch of %d entries (%s); writing one by one", len(entries), refused.reason
                )
                rejected = await self._write_one_by_one([entry for _, _, entry in entries])
            for problem in problems:
                logger.error("invocation journal: %s", problem)
            if rejected:
                await asyncio.to_thread(_keep_rejected, self._journal.spool_dir, rejected)
            self._journal.mark_shipped(entries)
            self.shipped_entries += len(entries)
            return len(entries)

    def _read_and_write(self, db: DAL) -> tuple[list[tuple[Segment, int, Entry]], list[str]]:
        entries, problems = self._journal.read_unshipped(BATCH_ENTRIES)
        try:
            write_batch(db, [entry for _, _, entry in entries])
        except Exception as error:
            if is_connection_error(error):
                raise
            raise _BatchRefused(entries, problems, str(error)) from error
        return entries, problems

    async def _write_one_by_one(self, entries: list[Entry]) -> list[tuple[Entry, str]]:
        """Each entry on its own, so that one the database refuses cannot hold back the others for ever."""
        rejected: list[tuple[Entry, str]] = []
        for entry in entries:
            try:
                await self._database.run(functools.partial(write_batch, entries=[entry]))
            except DatabaseUnavailable:
                raise
            except Exception as error:
                logger.error("the database refused the entry of %s: %s", entry.get("invocation_id"), error)
                rejected.append((entry, str(error)))
        return rejected

    async def _run(self) -> None:
        pause = self._interval
        while not self._stopping:
            try:
                shipped = await self.ship_once()
            except Exception as error:
                if self.database_ok:
                    logger.warning("the database does not take records (%s); they wait in the journal", error)
                self.database_ok = False
                self.last_error = str(error)
                pause = min(_MAX_PAUSE_SECONDS, max(pause * 2, self._interval))
            else:
                if not self.database_ok:
                    logger.info("the database takes invocation records again; shipping the journal's backlog")
                self.database_ok = True
                self.last_error = None
                pause = self._interval
                if shipped >= BATCH_ENTRIES:
                    # A backlog: keep going, letting the loop breathe between batches.
                    await asyncio.sleep(0)
                    continue
            # Entries written meanwhile go in the next batch: one transaction for many invocations.
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)


class _BatchRefused(Exception):
    """The database refused a batch for what is in it (not an outage)."""

    def __init__(self, entries: list[tuple[Segment, int, Entry]], problems: list[str], reason: str) -> None:
        super().__init__(reason)
        self.entries = entries
        self.problems = problems
        self.reason = reason


def write_batch(db: DAL, entries: Iterable[Entry]) -> None:
    """Write journal entries to `lambda_invocations` in the caller's transaction; a replay changes nothing."""
    rows: dict[str, dict[str, Any]] = {}
    started: set[str] = set()
    for entry in entries:
        invocation_id = entry.get("invocation_id")
        if not isinstance(invocation_id, str):
            continue
        row = rows.setdefault(invocation_id, {})
        fields: tuple[str, ...]
        if entry.get("kind") == "start":
            started.add(invocation_id)
            fields = START_FIELDS
        else:
            fields = OUTCOME_FIELDS
        for name in fields:
            if name in entry:
                row[name] = entry[name]
    if not rows:
        return
    columns = _columns_of(db)
    new_rows = []
    for invocation_id, row in rows.items():
        if invocation_id in started:
            new_rows.append(row)
            continue
        # An outcome whose start went in an earlier batch.
        table = db.lambda_invocations
        outcome: dict[str, Any] = {}
        altered: list[str] = []
        for column in columns.outcome:
            if column.name in row:
                outcome[column.name] = column.storable(row[column.name])
                if outcome[column.name] is not row[column.name] and not column.when:
                    altered.append(column.name)
        query = db(table.invocation_id == invocation_id)
        if altered:
            existing = query.select(table.altered_fields, limitby=(0, 1)).first()
            earlier = existing.altered_fields.split(",") if existing and existing.altered_fields else []
            outcome["altered_fields"] = ",".join([*earlier, *altered])
        if outcome and not query.update(**outcome):
            logger.error("the outcome of invocation %s has no start to complete; dropped", invocation_id)
    if new_rows:
        _upsert_rows(db, columns, new_rows)


class _Column:
    """How one column's values are stored: cut to its length, datetimes parsed, as PyDAL stores them."""

    __slots__ = ("length", "name", "rname", "sqlite", "when")

    def __init__(self, name: str, rname: str, length: int | None, *, when: bool, sqlite: bool) -> None:
        self.name = name
        self.rname = rname
        self.length = length
        self.when = when
        self.sqlite = sqlite

    def storable(self, value: Any) -> Any:
        """A journal value as PyDAL takes it in an update: datetimes parsed, text as `_text` leaves it."""
        if value is None:
            return None
        if self.when:
            return datetime.fromisoformat(value)
        if isinstance(value, str):
            return _text(value, self.length)
        return value

    def stored(self, value: Any) -> Any:
        """A journal value as this module's rows hold it (SQLite: booleans 'T'/'F', datetimes as text to the
        second), so PyDAL reads these rows as its own."""
        if value is None:
            return None
        if self.when:
            moment = datetime.fromisoformat(value).replace(microsecond=0)
            return moment.isoformat(sep=" ") if self.sqlite else moment
        if isinstance(value, str):
            return _text(value, self.length)
        if self.sqlite and isinstance(value, bool):
            return "T" if value else "F"
        return value


class _Columns:
    """The columns a batch writes, worked out once per connection rather than per row."""

    def __init__(self, db: DAL) -> None:
        table = db.lambda_invocations
        self.sqlite = db._adapter.dbengine == "sqlite"
        self.table_rname = table._rname
        self.id_rname = table.invocation_id._rname
        self.altered_rname = table.altered_fields._rname

        def column(name: str) -> _Column:
            field = table[name]
            length = field.length if field.type == "string" else None
            return _Column(name, field._rname, length, when=name in _DATETIME_FIELDS, sqlite=self.sqlite)

        self.all = [column(name) for name in (*START_FIELDS, *OUTCOME_FIELDS)]
        self.outcome = [column for column in self.all if column.name in OUTCOME_FIELDS]


def _columns_of(db: DAL) -> _Columns:
    columns = getattr(db, "_lambda_action_columns", None)
    if columns is None:
        columns = _Columns(db)
        db._lambda_action_columns = columns
    return columns


def _upsert_rows(db: DAL, columns: _Columns, rows: list[dict[str, Any]]) -> None:
    """One multi-row INSERT with the values bound by the driver; a row already there (a replay) only gets the outcome
    columns it lacks. PostgreSQL and SQLite both speak ON CONFLICT."""
    marker = "?" if columns.sqlite else "%s"
    row_markers = "(" + ",".join([marker] * (len(columns.all) + 1)) + ")"
    values: list[Any] = []
    for row in rows:
        altered = []
        for column in columns.all:
            journaled = row.get(column.name)
            stored = column.stored(journaled)
            # Text comes back as the same object unless it had to change to be stored.
            if isinstance(journaled, str) and stored is not journaled and not column.when:
                altered.append(column.name)
            values.append(stored)
        values.append(",".join(altered) or None)
    names = ",".join([*(column.rname for column in columns.all), columns.altered_rname])
    keep_known = ",".join(
        f"{rname} = COALESCE({columns.table_rname}.{rname}, excluded.{rname})"
        for rname in [*(column.rname for column in columns.outcome), columns.altered_rname]
    )
    db.executesql(
        f"INSERT INTO {columns.table_rname} ({names}) VALUES {','.join([row_markers] * len(rows))} "
        f"ON CONFLICT ({columns.id_rname}) DO UPDATE SET {keep_known};",
        placeholders=values,
    )


def _text(value: str, length: int | None) -> str:
    """Text as the database can hold it: within the column's length, without what PostgreSQL refuses."""
    if length is not None and len(value) > length:
        value = value[: length - 1] + "\u2026"
    # PostgreSQL's text cannot hold NUL nor a lone surrogate: replace them, visibly.
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def _keep_rejected(spool_dir: Path, rejected: list[tuple[Entry, str]]) -> None:
    with open(spool_dir / REJECTED_FILE, "a", encoding="utf-8") as file:
        for entry, reason in rejected:
            file.write(json.dumps({"reason": reason, "entry": entry}) + "\n")
