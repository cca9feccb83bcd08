"""The invocation history and per-function statistics: the records of `lambda_invocations`, read back.

Reads go to the database (what the shipper has written: a record reaches it within a second of its answer). A
client sees only its own invocations; a service (the router) sees every one. Lists are keyset-paginated, newest
first, on (invoked_at, id), so a page is an index range however deep it is, and rows shipped meanwhile never
shift the pages a caller is reading. Statistics are computed by the database, never by loading rows here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydal import DAL

from services.database import Database
from services.domain import INVOCATION_TYPES, Caller, function_name_of
from services.errors import InvalidRequest, InvocationNotFound, PageNotFound

logger = logging.getLogger(__name__)

MAX_HISTORY_PAGE = 200
DEFAULT_HISTORY_PAGE = 50
DEFAULT_STATS_PERIOD = timedelta(hours=24)
TRANSPORTS = ("rest", "grpc")
# Error codes counted as throttles: Lambda's own, and the module's cap on invocations in flight.
THROTTLE_CODES = ("Throttled", "ConcurrencyLimitReached")
PERCENTILES = (0.5, 0.95, 0.99)
# How long a history lookup waits for CloudWatch Logs before answering without the lines.
LOG_READ_TIMEOUT_SECONDS = 10.0
_INVOCATION_ID = re.compile(r"[0-9a-f]{32}")
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})")

SUMMARY_FIELDS = (
    "invocation_id",
    "function_name",
    "invocation_type",
    "alias",
    "version",
    "executed_version",
    "success",
    "status_code",
    "function_error",
    "error_code",
    "error_message",
    "request_id",
    "caller",
    "transport",
    "invoked_at",
    "completed_at",
    "duration_ms",
    "idempotency_key",
    "x_request_id",
)
DETAIL_FIELDS = (*SUMMARY_FIELDS, "payload", "response_payload", "log_tail", "altered_fields")


@dataclass(frozen=True)
class HistoryFilter:
    """Which invocations a list holds; None means any."""

    function_name: str | None = None
    success: bool | None = None
    invocation_type: str | None = None
    transport: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class InvocationPage:
    """One page of records (dicts of SUMMARY_FIELDS), and the cursor of the next (None on the last)."""

    items: list[dict[str, Any]]
    next_cursor: str | None = None


@dataclass(frozen=True)
class FunctionLogs:
    """Where an invocation's full log is, and its lines when they could be read."""

    # CloudWatch Logs: the function's log group, and a Logs Insights query for this invocation's lines.
    log_group: str | None = None
    insights_query: str | None = None
    # The lines themselves (FETCH_FUNCTION_LOGS=true on AWS; the recorded tail on the embedded runtime).
    lines: list[str] | None = None
    note: str = ""


@dataclass(frozen=True)
class InvocationDetail:
    """One record with its payloads and log tail (a dict of DETAIL_FIELDS), and where its full log is."""

    record: dict[str, Any]
    logs: FunctionLogs = field(default_factory=FunctionLogs)


@dataclass(frozen=True)
class FunctionStats:
    """How one function (or all of them: `function_name` None) did over a period."""

    function_name: str | None
    count: int
    successes: int
    function_errors: int
    throttles: int
    other_failures: int
    # Duration percentiles of the invocations Lambda answered, in ms; None when there were none.
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None

    @property
    def success_rate(self) -> float | None:
        return self.successes / self.count if self.count else None


@dataclass(frozen=True)
class StatsReport:
    since: datetime
    until: datetime
    functions: list[FunctionStats]
    totals: FunctionStats


# Retention: how often old records are looked for, how many go per transaction, and the pause between batches.
RETENTION_INTERVAL_SECONDS = 3600.0
RETENTION_BATCH = 1000
RETENTION_PAUSE_SECONDS = 0.1

LogReader = Callable[[str, str, datetime, datetime | None], list[str]]


class InvocationHistory:
    """Reads the invocation records for the history and statistics endpoints of both transports."""

    def __init__(
        self,
        database: Database,
        *,
        lambda_backend: str,
        read_logs: LogReader | None = None,
        retention_days: int = 0,
        retention_interval: float = RETENTION_INTERVAL_SECONDS,
    ) -> None:
        self._database = database
        self._lambda_backend = lambda_backend
        # Reads a function's CloudWatch lines for one request (FETCH_FUNCTION_LOGS=true); blocking.
        self._read_logs = read_logs
        self._retention_days = retention_days
        self._retention_interval = retention_interval
        self._retention: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin deleting records older than LOG_RETENTION_DAYS in the background (when it is set)."""
        if self._retention_days > 0 and self._retention is None:
            self._retention = asyncio.ensure_future(self._keep_retention())

    async def close(self) -> None:
        """Stop the background deletion (a batch under way is rolled back with its connection)."""
        if self._retention is not None:
            self._retention.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention
            self._retention = None

    async def delete_expired(self) -> int:
        """Delete every record older than LOG_RETENTION_DAYS, RETENTION_BATCH rows per transaction; how many."""
        cutoff = _utc_now() - timedelta(days=self._retention_days)
        deleted = 0
        while True:
            batch = await self._database.run(lambda db: _delete_before(db, cutoff))
            deleted += batch
            if batch < RETENTION_BATCH:
                return deleted
            # Other work gets the database between batches.
            await asyncio.sleep(RETENTION_PAUSE_SECONDS)

    async def _keep_retention(self) -> None:
        while True:
            try:
                deleted = await self.delete_expired()
                if deleted:
                    logger.info("deleted %d invocation records older than %d days", deleted, self._retention_days)
            except Exception as error:
                logger.warning("could not delete old invocation records: %s", error)
            await asyncio.sleep(self._retention_interval)

    async def list(
        self, caller: Caller, which: HistoryFilter, limit: int = DEFAULT_HISTORY_PAGE, cursor: str | None = None
    ) -> InvocationPage:
        """One page of the caller's invocations (every one for a service), newest first."""
        check_history_filter(which)
        if not 1 <= limit <= MAX_HISTORY_PAGE:
            raise InvalidRequest(f"limit must be between 1 and {MAX_HISTORY_PAGE}")
        after = _decode_cursor(cursor) if cursor else None
        rows = await self._database.run(lambda db: _select_page(db, _scope(caller), which, limit, after))
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = _encode_cursor(rows[-1]["invoked_at"], rows[-1]["id"])
        for row in rows:
            row.pop("id", None)
        return InvocationPage(items=rows, next_cursor=next_cursor)

    async def get(self, caller: Caller, invocation_id: str) -> InvocationDetail:
        """One of the caller's invocations (any, for a service); InvocationNotFound for another's, as for none."""
        if not _INVOCATION_ID.fullmatch(invocation_id):
            raise InvalidRequest("invocation_id must be the 32 hexadecimal digits an invocation's answer gave")
        record = await self._database.run(lambda db: _select_one(db, _scope(caller), invocation_id))
        if record is None:
            raise InvocationNotFound(
                f"no invocation {invocation_id} of yours is recorded (a record reaches the history within a second "
                "of its answer)"
            )
        return InvocationDetail(record=record, logs=await self._logs_of(record))

    async def stats(
        self,
        caller: Caller,
        since: datetime | None = None,
        until: datetime | None = None,
        function_name: str | None = None,
    ) -> StatsReport:
        """Per function and in total: counts by outcome and duration percentiles, computed by the database."""
        # An empty period (since at or after until) has no invocations: its figures are all zero.
        until = until or _utc_now()
        since = since or _earlier(until, DEFAULT_STATS_PERIOD)
        if function_name is not None:
            function_name_of(function_name)
        scope = _scope(caller)
        functions, totals = await self._database.run(lambda db: _stats(db, scope, since, until, function_name))
        return StatsReport(since=since, until=until, functions=functions, totals=totals)

    async def _logs_of(self, record: dict[str, Any]) -> FunctionLogs:
        tail = record.get("log_tail")
        local = self._lambda_backend == "local"
        name = function_name_of(record["function_name"])
        group = f"/aws/lambda/{name}"
        request_id = record.get("request_id")
        if not request_id:
            return FunctionLogs(log_group=group, note="Lambda gave no request id for this invocation")
        # The embedded runtime has no Logs Insights; on AWS this query finds every line of the invocation.
        query = (
            None
            if local
            else (
                f'fields @timestamp, @message | filter @requestId = "{request_id}" or @message like "{request_id}" '
                "| sort @timestamp asc | limit 1000"
            )
        )
        if self._read_logs is None and local:
            return FunctionLogs(log_group=group, lines=tail.splitlines() if tail else None, note="the recorded tail")
        if self._read_logs is None:
            return FunctionLogs(
                log_group=group,
                insights_query=query,
                note="run the query in CloudWatch Logs Insights on the log group (FETCH_FUNCTION_LOGS=true shows the "
                "lines here)",
            )
        where = "the embedded runtime" if local else "CloudWatch Logs"
        try:
            lines = await asyncio.wait_for(
                asyncio.to_thread(self._read_logs, group, request_id, record["invoked_at"], record.get("completed_at")),
                LOG_READ_TIMEOUT_SECONDS,
            )
        except TimeoutError:
            return FunctionLogs(log_group=group, insights_query=query, note=f"{where} did not answer in time")
        except Exception as error:
            if local:
                # The runtime keeps only its last invocations' logs (and none from before a restart).
                return FunctionLogs(
                    log_group=group,
                    lines=tail.splitlines() if tail else None,
                    note="the embedded runtime no longer holds this invocation's log; the recorded tail is shown",
                )
            logger.warning("could not read the log of %s from CloudWatch: %s", record["invocation_id"], error)
            return FunctionLogs(log_group=group, insights_query=query, note=f"{where} did not answer: {error}")
        note = "from the embedded runtime, which keeps its last 1,000 invocations' logs" if local else ""
        return FunctionLogs(log_group=group, insights_query=query, lines=lines, note=note)


def check_history_filter(which: HistoryFilter) -> None:
    """InvalidRequest for a filter no record could match because it is malformed."""
    if which.function_name is not None:
        function_name_of(which.function_name)
    if which.invocation_type is not None and which.invocation_type not in INVOCATION_TYPES:
        raise InvalidRequest(f"invocation_type must be one of {', '.join(INVOCATION_TYPES)}")
    if which.transport is not None and which.transport not in TRANSPORTS:
        raise InvalidRequest(f"transport must be one of {', '.join(TRANSPORTS)}")


def utc_text(moment: datetime | None) -> str | None:
    """A recorded instant (naive UTC) as RFC 3339 with its Z, as both transports show it."""
    return None if moment is None else moment.isoformat() + "Z"


def parse_instant(text: str, name: str) -> datetime:
    """An RFC 3339 instant (`2026-12-01T10:00:00Z`, or with an offset such as +02:00) as naive UTC."""
    if not _RFC3339.fullmatch(text):
        raise InvalidRequest(f"{name} must be an RFC 3339 date and time with its offset, such as 2026-12-01T10:00:00Z")
    # Python takes at most microseconds, and no leap second (RFC 3339's :60, taken as the second before).
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    text = re.sub(r"(:\d{2}:)60", r"\g<1>59", text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):
        raise InvalidRequest(f"{name} is not a valid date and time (RFC 3339), such as 2026-12-01T10:00:00Z") from None
    return moment


def parse_success(text: str) -> bool:
    """`true` or `false` (as query strings spell them)."""
    lowered = text.lower()
    if lowered not in ("true", "false"):
        raise InvalidRequest("success must be true or false")
    return lowered == "true"


def _earlier(moment: datetime, period: timedelta) -> datetime:
    try:
        return moment - period
    except OverflowError:
        return datetime.min


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _scope(caller: Caller) -> str | None:
    """The `caller` value a caller's reads are limited to; None for a service, which sees all."""
    return None if caller.kind == "service" else caller.label


def _encode_cursor(invoked_at: datetime, row_id: int) -> str:
    text = json.dumps([invoked_at.isoformat(), row_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        moment, row_id = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        if not isinstance(row_id, int) or isinstance(row_id, bool):
            raise ValueError("not a row")
        return datetime.fromisoformat(moment), row_id
    except (ValueError, TypeError, UnicodeError, binascii.Error):
        # As for a listing's unknown next_marker: no page starts there.
        raise PageNotFound(
            "no page of the history starts at this cursor: pass the next_cursor of the previous page, or none"
        ) from None


def _query(db: DAL, scope: str | None, which: HistoryFilter) -> Any:
    table = db.lambda_invocations
    query = table.id > 0
    if scope is not None:
        query &= table.caller == scope
    if which.function_name is not None:
        query &= table.function_name == which.function_name
    if which.success is not None:
        query &= table.success == which.success
    if which.invocation_type is not None:
        query &= table.invocation_type == which.invocation_type
    if which.transport is not None:
        query &= table.transport == which.transport
    if which.since is not None:
        query &= table.invoked_at >= which.since
    if which.until is not None:
        query &= table.invoked_at < which.until
    return query


def _select_page(
    db: DAL, scope: str | None, which: HistoryFilter, limit: int, after: tuple[datetime, int] | None
) -> list[dict[str, Any]]:
    table = db.lambda_invocations
    query = _query(db, scope, which)
    if after is not None:
        moment, row_id = after
        query &= (table.invoked_at < moment) | ((table.invoked_at == moment) & (table.id < row_id))
    rows = db(query).select(
        table.id,
        *(table[name] for name in SUMMARY_FIELDS),
        orderby=~table.invoked_at | ~table.id,
        limitby=(0, limit + 1),
    )
    return [row.as_dict() for row in rows]


def _delete_before(db: DAL, cutoff: datetime) -> int:
    table = db.lambda_invocations
    oldest = db(table.invoked_at < cutoff)._select(table.id, limitby=(0, RETENTION_BATCH))
    return int(db(table.id.belongs(oldest)).delete() or 0)


def _select_one(db: DAL, scope: str | None, invocation_id: str) -> dict[str, Any] | None:
    table = db.lambda_invocations
    query = table.invocation_id == invocation_id
    if scope is not None:
        query &= table.caller == scope
    row = db(query).select(*(table[name] for name in DETAIL_FIELDS), limitby=(0, 1)).first()
    return row.as_dict() if row is not None else None


def _stats(
    db: DAL, scope: str | None, since: datetime, until: datetime, function_name: str | None
) -> tuple[list[FunctionStats], FunctionStats]:
    """Counts and percentiles in SQL: PostgreSQL's percentile_cont, and the same interpolation written out for
    SQLite (which has window functions but no percentile)."""
    sqlite = db._adapter.dbengine == "sqlite"
    marker = "?" if sqlite else "%s"
    conditions = [f"invoked_at >= {marker}", f"invoked_at < {marker}", "completed_at IS NOT NULL"]
    # SQLite holds PyDAL's datetimes as text to the second, and its booleans as 'T' and 'F'.
    parameters: list[Any] = [_sqlite_text(since), _sqlite_text(until)] if sqlite else [since, until]
    if scope is not None:
        conditions.append(f"caller = {marker}")
        parameters.append(scope)
    if function_name is not None:
        conditions.append(f"function_name = {marker}")
        parameters.append(function_name)
    where = " AND ".join(conditions)
    succeeded = "success = 'T'" if sqlite else "success"
    throttled = "error_code IN (" + ",".join(f"'{code}'" for code in THROTTLE_CODES) + ")"
    counts_sql = (
        f"SELECT function_name, COUNT(*), SUM(CASE WHEN {succeeded} THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN function_error IS NOT NULL THEN 1 ELSE 0 END), "
        f"SUM(CASE WHEN {throttled} THEN 1 ELSE 0 END) "
        f"FROM lambda_invocations WHERE {where} GROUP BY function_name ORDER BY function_name;"
    )
    counts = db.executesql(counts_sql, placeholders=parameters)
    percentiles = _percentiles(db, sqlite, where, parameters)
    functions = [
        _function_stats(name, count, successes, errors, throttles, percentiles.get(name))
        for name, count, successes, errors, throttles in counts
    ]
    total = [sum(int(row[index] or 0) for row in counts) for index in (1, 2, 3, 4)]
    totals = _function_stats(None, total[0], total[1], total[2], total[3], percentiles.get(None))
    return functions, totals


def _percentiles(
    db: DAL, sqlite: bool, where: str, parameters: list[Any]
) -> dict[str | None, tuple[float | None, ...]]:
    """(p50, p95, p99) of the duration of invocations Lambda answered, per function and (under None) over all."""
    answered = f"{where} AND status_code IS NOT NULL AND duration_ms IS NOT NULL"
    found: dict[str | None, tuple[float | None, ...]] = {}
    if not sqlite:
        fractions = "ARRAY[" + ",".join(str(p) for p in PERCENTILES) + "]"
        per_function = db.executesql(
            f"SELECT function_name, percentile_cont({fractions}) WITHIN GROUP (ORDER BY duration_ms) "
            f"FROM lambda_invocations WHERE {answered} GROUP BY function_name;",
            placeholders=parameters,
        )
        overall = db.executesql(
            f"SELECT percentile_cont({fractions}) WITHIN GROUP (ORDER BY duration_ms) "
            f"FROM lambda_invocations WHERE {answered};",
            placeholders=parameters,
        )
        found = {name: tuple(values) for name, values in per_function}
        if overall and overall[0][0] is not None:
            found[None] = tuple(overall[0][0])
        return found
    # percentile_cont(p): the value at rank (n - 1) * p counting from 0, interpolated between its neighbours.
    fractions = " UNION ALL ".join(f"SELECT {p} AS p" for p in PERCENTILES)
    for grouped in (True, False):
        partition = "PARTITION BY function_name " if grouped else ""
        rows = db.executesql(
            f"WITH ranked AS (SELECT {'function_name' if grouped else 'NULL'} AS name, duration_ms AS v, "
            f"ROW_NUMBER() OVER ({partition}ORDER BY duration_ms) - 1 AS i, COUNT(*) OVER ({partition.strip()}) AS n "
            f"FROM lambda_invocations WHERE {answered}), "
            f"fractions AS ({fractions}) "
            "SELECT name, p, SUM(CASE "
            "WHEN i = CAST((n - 1) * p AS INTEGER) THEN v * (1 - ((n - 1) * p - CAST((n - 1) * p AS INTEGER))) "
            "WHEN i = CAST((n - 1) * p AS INTEGER) + 1 THEN v * ((n - 1) * p - CAST((n - 1) * p AS INTEGER)) "
            "ELSE 0 END) FROM ranked CROSS JOIN fractions GROUP BY name, p ORDER BY name, p;",
            placeholders=parameters,
        )
        values: dict[str | None, list[float]] = {}
        for name, _, value in rows:
            values.setdefault(name, []).append(float(value))
        found.update({name: tuple(listed) for name, listed in values.items()})
    return found


def _function_stats(
    name: str | None,
    count: Any,
    successes: Any,
    function_errors: Any,
    throttles: Any,
    percentiles: tuple[float | None, ...] | None,
) -> FunctionStats:
    count, successes = int(count or 0), int(successes or 0)
    function_errors, throttles = int(function_errors or 0), int(throttles or 0)
    p50, p95, p99 = (round(float(value), 3) if value is not None else None for value in (percentiles or (None,) * 3))
    return FunctionStats(
        function_name=name,
        count=count,
        successes=successes,
        function_errors=function_errors,
        throttles=throttles,
        other_failures=count - successes - function_errors - throttles,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
    )


def _sqlite_text(moment: datetime) -> str:
    # Compared as text with values stored to the second: "12:00:00" sorts before "12:00:00.5", as it should.
    return moment.isoformat(sep=" ")
