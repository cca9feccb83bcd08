"""Protobuf messages <-> the services' plain types; nothing else in the module sees the generated classes."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from proto import lambda_action_pb2 as pb
from services.domain import FunctionInfo, InvokeRequest, InvokeResult, invocation_type_of
from services.errors import InvalidRequest, ServiceError
from services.history import FunctionStats, HistoryFilter, InvocationDetail, StatsReport, parse_instant, utc_text
from services.json_rules import parse_json
from services.lambda_service import encode_client_context


def invoke_request(message: pb.InvokeFunctionRequest, idempotency_key: str | None = None) -> InvokeRequest:
    """The domain request of an InvokeFunctionRequest; empty strings mean "not given"."""
    return InvokeRequest(
        function_name=message.function_name,
        payload=payload_bytes(message.payload),
        invocation_type=invocation_type_of(message.invocation_type or "RequestResponse"),
        alias=message.alias or None,
        version=message.version or None,
        client_context=_client_context(message.client_context),
        idempotency_key=idempotency_key,
    )


def batch_item(index: int, message: pb.InvokeFunctionRequest) -> InvokeRequest | ServiceError:
    """One batch item as a domain request, or the error that keeps it from running (never the whole batch's)."""
    try:
        return invoke_request(message)
    except InvalidRequest as error:
        return InvalidRequest(f"invocations[{index}]: {error.message}")


def payload_bytes(payload: str) -> bytes:
    """The bytes Lambda gets: the payload's JSON text, `{}` when empty."""
    return payload.encode("utf-8") if payload else b"{}"


def _client_context(text: str) -> str | None:
    if not text:
        return None
    context = parse_json(text, "client_context")
    if not isinstance(context, dict):
        raise InvalidRequest("client_context must be a JSON object")
    return encode_client_context(context)


def invoke_response(result: InvokeResult) -> pb.InvokeFunctionResponse:
    """What Lambda answered, as an InvokeFunctionResponse."""
    return pb.InvokeFunctionResponse(
        success=result.success,
        status_code=result.status_code,
        payload=result.payload,
        function_error=result.function_error or "",
        log_result=result.log_result or "",
        executed_version=result.executed_version or "",
        invocation_id=result.invocation_id,
        request_id=result.request_id or "",
        duration_ms=result.duration_ms,
    )


def batch_error_response(error: ServiceError) -> pb.InvokeFunctionResponse:
    """A batch item that did not run, or failed: success false, with the error and its stable name."""
    return pb.InvokeFunctionResponse(success=False, error=error.message, error_code=error.code)


def invoke_async_response(result: InvokeResult) -> pb.InvokeAsyncResponse:
    """An accepted Event invocation."""
    return pb.InvokeAsyncResponse(
        success=result.success,
        status_code=result.status_code,
        request_id=result.request_id or "",
        invocation_id=result.invocation_id,
    )


def function_info(info: FunctionInfo) -> pb.FunctionInfo:
    """A function's configuration, as a FunctionInfo message (its fields have the dataclass's names)."""
    fields = dataclasses.asdict(info)
    return pb.FunctionInfo(**{**fields, "code_size": _int32(info.code_size), "architectures": list(info.architectures)})


_SUCCESS_FILTER = {
    pb.ListInvocationsRequest.SUCCESS_ANY: None,
    pb.ListInvocationsRequest.SUCCESS_TRUE: True,
    pb.ListInvocationsRequest.SUCCESS_FALSE: False,
}


def history_filter(message: pb.ListInvocationsRequest) -> HistoryFilter:
    """The history filter of a ListInvocationsRequest; empty strings mean "any"."""
    if message.success not in _SUCCESS_FILTER:
        raise InvalidRequest("success must be SUCCESS_ANY, SUCCESS_TRUE or SUCCESS_FALSE")
    return HistoryFilter(
        function_name=message.function_name or None,
        success=_SUCCESS_FILTER[message.success],
        invocation_type=message.invocation_type or None,
        transport=message.transport or None,
        since=parse_instant(message.since, "since") if message.since else None,
        until=parse_instant(message.until, "until") if message.until else None,
    )


def optional_instant(text: str, name: str) -> datetime | None:
    """An ISO 8601 field of a message; empty means not given."""
    return parse_instant(text, name) if text else None


def invocation_record(record: dict[str, Any]) -> pb.InvocationRecord:
    """A recorded invocation as an InvocationRecord (payloads and log tail only when `record` holds them)."""
    altered = record.get("altered_fields")
    return pb.InvocationRecord(
        invocation_id=record["invocation_id"],
        function_name=record["function_name"],
        invocation_type=record["invocation_type"],
        alias=record.get("alias") or "",
        version=record.get("version") or "",
        executed_version=record.get("executed_version") or "",
        success=bool(record.get("success")),
        status_code=_int32(record.get("status_code") or 0),
        function_error=record.get("function_error") or "",
        error_code=record.get("error_code") or "",
        error_message=record.get("error_message") or "",
        request_id=record.get("request_id") or "",
        caller=record.get("caller") or "",
        transport=record.get("transport") or "",
        invoked_at=_instant(record.get("invoked_at")),
        completed_at=_instant(record.get("completed_at")),
        duration_ms=record.get("duration_ms") or 0.0,
        idempotency_key=record.get("idempotency_key") or "",
        payload=record.get("payload") or "",
        response_payload=record.get("response_payload") or "",
        log_tail=record.get("log_tail") or "",
        altered_fields=altered.split(",") if altered else [],
        x_request_id=record.get("x_request_id") or "",
    )


def invocation_response(detail: InvocationDetail) -> pb.GetInvocationResponse:
    """One invocation's record and where its log is."""
    logs = detail.logs
    return pb.GetInvocationResponse(
        invocation=invocation_record(detail.record),
        logs=pb.FunctionLogs(
            log_group=logs.log_group or "",
            insights_query=logs.insights_query or "",
            lines=logs.lines or [],
            note=logs.note,
        ),
    )


def stats_response(report: StatsReport) -> pb.GetStatsResponse:
    """The statistics of a period."""
    return pb.GetStatsResponse(
        since=_instant(report.since),
        until=_instant(report.until),
        functions=[_function_stats(stats) for stats in report.functions],
        totals=_function_stats(report.totals),
    )


def _function_stats(stats: FunctionStats) -> pb.FunctionStats:
    return pb.FunctionStats(
        function_name=stats.function_name or "",
        count=stats.count,
        successes=stats.successes,
        function_errors=stats.function_errors,
        throttles=stats.throttles,
        other_failures=stats.other_failures,
        success_rate=stats.success_rate or 0.0,
        p50_ms=stats.p50_ms or 0.0,
        p95_ms=stats.p95_ms or 0.0,
        p99_ms=stats.p99_ms or 0.0,
    )


def _instant(moment: datetime | None) -> str:
    return utc_text(moment) or ""


def _int32(value: int) -> int:
    # Lambda's code sizes fit comfortably, but the wire field is int32: never fail a reply over it.
    return min(value, 2**31 - 1)
