"""POST /api/v1/invoke, /invoke-async and /batch."""

from __future__ import annotations

import dataclasses
from typing import TypeVar

from pydantic import ValidationError
from quart import Blueprint
from quart_schema import document_response, security_scheme_blueprint

from routes.context import app_services, authenticate_request, current_caller
from routes.errors import describe_pydantic_errors, documents_errors
from routes.schemas import (
    BatchBody,
    BatchReply,
    IdempotencyHeaders,
    InvokeAsyncBody,
    InvokeAsyncReply,
    InvokeBody,
    InvokeReply,
    ReplayedHeaders,
    batch_item_error,
    invoke_reply,
    payload_bytes,
)
from routes.validation import body_of, headers_of
from services.domain import InvokeRequest, InvokeResult
from services.errors import InvalidRequest, ServiceError

blueprint = Blueprint("invoke", __name__)
blueprint.before_request(authenticate_request)
security_scheme_blueprint(blueprint, [{"bearer": []}])

# What an invocation can answer besides its result: bad input, auth, reach, not found, an outcome not known (yet),
# size, an Idempotency-Key reused for another body, throttling, and Lambda or the module's own unavailability.
INVOKE_ERRORS = (400, 401, 403, 404, 409, 413, 415, 422, 429, 502, 503, 504)
# Sent with a replayed outcome (an Idempotency-Key seen before), as the IETF draft's implementations do.
REPLAYED_HEADER = "Idempotent-Replayed"

Reply = TypeVar("Reply")
# A route's reply and status, and its headers when it has any.
Answer = tuple[Reply, int] | tuple[Reply, int, dict[str, str]]

# RequestResponse answers 200; an accepted Event invocation answers 202 Accepted.
_HTTP_STATUS_BY_TYPE = {"RequestResponse": 200, "Event": 202, "DryRun": 200}


@blueprint.post("/api/v1/invoke")
@body_of(InvokeBody)
@headers_of(IdempotencyHeaders)
@document_response(InvokeReply, 200, ReplayedHeaders)
@document_response(InvokeReply, 202, ReplayedHeaders)
@documents_errors(*INVOKE_ERRORS)
async def invoke(data: InvokeBody, headers: IdempotencyHeaders) -> Answer[InvokeReply]:
    """Invoke a function; a function's own error answers 200 with success false and function_error."""
    request = dataclasses.replace(data.to_domain(), idempotency_key=headers.idempotency_key)
    result = await app_services().service.invoke(request, current_caller(), "rest")
    return _answer(invoke_reply(result), _HTTP_STATUS_BY_TYPE[result.invocation_type], result)


@blueprint.post("/api/v1/invoke-async")
@body_of(InvokeAsyncBody)
@headers_of(IdempotencyHeaders)
@document_response(InvokeAsyncReply, 202, ReplayedHeaders)
@documents_errors(*INVOKE_ERRORS)
async def invoke_async(data: InvokeAsyncBody, headers: IdempotencyHeaders) -> Answer[InvokeAsyncReply]:
    """Queue an Event invocation and answer with Lambda's request id."""
    result = await app_services().service.invoke_async(
        data.function_name,
        payload_bytes(data.payload),
        current_caller(),
        "rest",
        payload_is_json=not isinstance(data.payload, str),
        idempotency_key=headers.idempotency_key,
    )
    reply = InvokeAsyncReply(
        success=result.success,
        status_code=result.status_code,
        request_id=result.request_id,
        invocation_id=result.invocation_id,
    )
    return _answer(reply, 202, result)


@blueprint.post("/api/v1/batch")
@body_of(BatchBody)
@headers_of(IdempotencyHeaders)
@document_response(BatchReply, 200)
@documents_errors(400, 401, 413, 415, 422, 503)
async def batch(data: BatchBody, headers: IdempotencyHeaders) -> BatchReply:
    """Invoke many functions; one result per item, in order, each with its own success or error.

    With an Idempotency-Key, a repeat of the batch answers each item with its first invocation's outcome.
    """
    items = [_parse_item(index, item) for index, item in enumerate(data.invocations)]
    outcomes = await app_services().service.batch_invoke(
        items, current_caller(), "rest", idempotency_key=headers.idempotency_key
    )
    results = [
        batch_item_error(outcome) if isinstance(outcome, ServiceError) else invoke_reply(outcome)
        for outcome in outcomes
    ]
    return BatchReply(results=results)


def _answer(reply: Reply, status: int, result: InvokeResult) -> Answer[Reply]:
    """The reply and its status, with the replay header only when there is one: quart-schema converts a headers
    dict through a new pydantic TypeAdapter on every response, which cost tens of microseconds per invocation."""
    if result.replayed:
        return reply, status, {REPLAYED_HEADER: "true"}
    return reply, status


def _parse_item(index: int, item: object) -> InvokeRequest | ServiceError:
    """One batch item as a domain request, or the error that keeps it from running (it never fails the batch)."""
    try:
        return InvokeBody.model_validate(item).to_domain()
    except ValidationError as error:
        return InvalidRequest(f"invocations[{index}] is invalid: {describe_pydantic_errors(error.errors())}")
