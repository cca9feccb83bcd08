"""Protobuf messages <-> the services' plain types; nothing else in the module sees the generated classes."""

from __future__ import annotations

import dataclasses

from proto import lambda_action_pb2 as pb
from services.domain import FunctionInfo, InvokeRequest, InvokeResult, invocation_type_of
from services.errors import InvalidRequest, ServiceError
from services.json_rules import parse_json
from services.lambda_service import encode_client_context


def invoke_request(message: pb.InvokeFunctionRequest) -> InvokeRequest:
    """The domain request of an InvokeFunctionRequest; empty strings mean "not given"."""
    return InvokeRequest(
        function_name=message.function_name,
        payload=payload_bytes(message.payload),
        invocation_type=invocation_type_of(message.invocation_type or "RequestResponse"),
        alias=message.alias or None,
        version=message.version or None,
        client_context=_client_context(message.client_context),
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


def _int32(value: int) -> int:
    # Lambda's code sizes fit comfortably, but the wire field is int32: never fail a reply over it.
    return min(value, 2**31 - 1)
