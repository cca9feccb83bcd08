"""The REST wire types of the history and statistics endpoints, and their conversions from the services' types."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field

from routes.schemas import FUNCTION_NAME_SCHEMA
from services.domain import FUNCTION_REFERENCE_MAX_LENGTH
from services.history import (
    DEFAULT_HISTORY_PAGE,
    MAX_HISTORY_PAGE,
    FunctionStats,
    HistoryFilter,
    InvocationDetail,
    InvocationPage,
    StatsReport,
    parse_instant,
    utc_text,
)

_INSTANT: dict[str, Any] = {
    "format": "date-time",
    "description": "An RFC 3339 date and time with its offset, such as 2026-12-01T10:00:00Z",
    "examples": ["2026-12-01T10:00:00Z"],
}


class HistoryQuery(BaseModel):
    """Filters of the invocation history; every one optional."""

    function_name: str | None = Field(
        default=None, min_length=1, max_length=FUNCTION_REFERENCE_MAX_LENGTH, json_schema_extra=FUNCTION_NAME_SCHEMA
    )
    success: bool | None = None
    invocation_type: Literal["RequestResponse", "Event", "DryRun"] | None = None
    transport: Literal["rest", "grpc"] | None = None
    since: str | None = Field(default=None, max_length=64, json_schema_extra=_INSTANT)
    until: str | None = Field(default=None, max_length=64, json_schema_extra=_INSTANT)
    limit: int = Field(default=DEFAULT_HISTORY_PAGE, ge=1, le=MAX_HISTORY_PAGE)
    cursor: str | None = Field(default=None, max_length=256, description="next_cursor of the previous page")

    def to_filter(self) -> HistoryFilter:
        return HistoryFilter(
            function_name=self.function_name,
            success=self.success,
            invocation_type=self.invocation_type,
            transport=self.transport,
            since=parse_instant(self.since, "since") if self.since is not None else None,
            until=parse_instant(self.until, "until") if self.until is not None else None,
        )


class StatsQuery(BaseModel):
    """The period (default the last 24 hours) and, optionally, one function."""

    since: str | None = Field(default=None, max_length=64, json_schema_extra=_INSTANT)
    until: str | None = Field(default=None, max_length=64, json_schema_extra=_INSTANT)
    function_name: str | None = Field(
        default=None, min_length=1, max_length=FUNCTION_REFERENCE_MAX_LENGTH, json_schema_extra=FUNCTION_NAME_SCHEMA
    )


class InvocationItem(BaseModel):
    """One invocation as recorded, without its payloads; `success` is null while it runs."""

    invocation_id: str
    function_name: str
    invocation_type: str
    alias: str | None = None
    version: str | None = None
    executed_version: str | None = None
    success: bool | None = None
    status_code: int | None = None
    function_error: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    request_id: str | None = None
    caller: str | None = None
    transport: str | None = None
    invoked_at: str
    completed_at: str | None = None
    duration_ms: float | None = None
    idempotency_key: str | None = None
    # The call's X-Request-Id (or gRPC x-request-id), as the caller sent it or the module made it.
    x_request_id: str | None = None


class InvocationPageReply(BaseModel):
    success: bool = True
    invocations: list[InvocationItem]
    next_cursor: str | None = None


class FunctionLogsReply(BaseModel):
    """Where the invocation's whole log is (CloudWatch Logs on AWS), and its lines when they could be read."""

    log_group: str | None = None
    insights_query: str | None = None
    lines: list[str] | None = None
    note: str = ""


class InvocationDetailItem(InvocationItem):
    """One invocation with its request and response payloads and the end of its log."""

    payload: Any = None
    response_payload: Any = None
    log_tail: str | None = None
    altered_fields: list[str] = Field(default_factory=list)
    logs: FunctionLogsReply


class InvocationDetailReply(BaseModel):
    success: bool = True
    invocation: InvocationDetailItem


class FunctionStatsItem(BaseModel):
    """Counts by outcome over the period, and the duration percentiles of the calls Lambda answered (ms)."""

    function_name: str | None = None
    count: int
    successes: int
    function_errors: int
    throttles: int
    other_failures: int
    success_rate: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None


class StatsReply(BaseModel):
    success: bool = True
    since: str
    until: str
    functions: list[FunctionStatsItem]
    totals: FunctionStatsItem


def _item_fields(record: dict[str, Any]) -> dict[str, Any]:
    fields = {name: record.get(name) for name in InvocationItem.model_fields}
    fields["invoked_at"] = utc_text(record["invoked_at"])
    fields["completed_at"] = utc_text(record.get("completed_at"))
    return fields


def invocation_page(page: InvocationPage) -> InvocationPageReply:
    """The reply for one page of the history."""
    return InvocationPageReply(
        invocations=[InvocationItem(**_item_fields(record)) for record in page.items], next_cursor=page.next_cursor
    )


def invocation_detail(detail: InvocationDetail) -> InvocationDetailReply:
    """The reply for one invocation, payloads as JSON values when they are JSON (else as their text)."""
    record = detail.record
    altered = record.get("altered_fields")
    return InvocationDetailReply(
        invocation=InvocationDetailItem(
            **_item_fields(record),
            payload=_json_or_text(record.get("payload")),
            response_payload=_json_or_text(record.get("response_payload")),
            log_tail=record.get("log_tail"),
            altered_fields=altered.split(",") if altered else [],
            logs=FunctionLogsReply(
                log_group=detail.logs.log_group,
                insights_query=detail.logs.insights_query,
                lines=detail.logs.lines,
                note=detail.logs.note,
            ),
        )
    )


def stats_reply(report: StatsReport) -> StatsReply:
    """The reply for the statistics of a period."""
    return StatsReply(
        since=utc_text(report.since) or "",
        until=utc_text(report.until) or "",
        functions=[_stats_item(stats) for stats in report.functions],
        totals=_stats_item(report.totals),
    )


def _stats_item(stats: FunctionStats) -> FunctionStatsItem:
    rate = stats.success_rate
    return FunctionStatsItem(
        function_name=stats.function_name,
        count=stats.count,
        successes=stats.successes,
        function_errors=stats.function_errors,
        throttles=stats.throttles,
        other_failures=stats.other_failures,
        success_rate=None if rate is None else round(rate, 4),
        p50_ms=stats.p50_ms,
        p95_ms=stats.p95_ms,
        p99_ms=stats.p99_ms,
    )


def _json_or_text(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text
