"""The one mapping of domain errors to HTTP statuses, and the one JSON shape of every REST error."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel
from quart import Quart, Response, jsonify
from quart_schema import RequestSchemaValidationError, document_response
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from services.errors import (
    BackendNotConfigured,
    DatabaseUnavailable,
    DeadlineExceeded,
    Forbidden,
    FunctionNotFound,
    IdempotencyKeyReused,
    InternalError,
    InvalidRequest,
    InvocationNotFound,
    OutcomeUnknown,
    PageNotFound,
    PayloadTooLarge,
    ServiceError,
    Throttled,
    Unauthenticated,
    UpstreamError,
    UpstreamTimeout,
    retry_after_of,
)

logger = logging.getLogger(__name__)

T = TypeVar("T", bound=Callable[..., Any])

HTTP_STATUS_BY_ERROR: dict[type[ServiceError], int] = {
    InvalidRequest: 400,
    PayloadTooLarge: 413,
    # Well-formed, but the key belongs to another request: RFC 9110's 422, as the Idempotency-Key draft says.
    IdempotencyKeyReused: 422,
    Unauthenticated: 401,
    Forbidden: 403,
    FunctionNotFound: 404,
    PageNotFound: 404,
    InvocationNotFound: 404,
    # A status the usual clients do not retry on their own: running the function again may do its work twice.
    OutcomeUnknown: 409,
    Throttled: 429,
    UpstreamError: 502,
    UpstreamTimeout: 504,
    DeadlineExceeded: 504,
    BackendNotConfigured: 503,
    DatabaseUnavailable: 503,
    InternalError: 500,
}
_INTERNAL_STATUS = 500

# Names for the statuses Quart itself raises (unknown route, wrong method, body too large...).
_HTTP_CODES = {
    400: "InvalidRequest",
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "PayloadTooLarge",
    415: "InvalidRequest",
}


class ErrorReply(BaseModel):
    """The one shape of every error."""

    success: bool = False
    error: str
    code: str
    # Only with OutcomeUnknown and InvocationInProgress (409): the invocation whose record will say how it ended.
    invocation_id: str | None = None


def documents_errors(*statuses: int) -> Callable[[T], T]:
    """Document, on a route, the error answers it can give: each with the one error shape."""

    def decorate(route: T) -> T:
        for status in statuses:
            route = document_response(ErrorReply, status)(route)
        return route

    return decorate


def http_status_for(error: ServiceError) -> int:
    """The HTTP status of a domain error, found by walking its class hierarchy."""
    for cls in type(error).__mro__:
        if cls in HTTP_STATUS_BY_ERROR:
            return HTTP_STATUS_BY_ERROR[cls]
    return _INTERNAL_STATUS


def error_body(error: ServiceError) -> dict[str, object]:
    """The JSON body of a domain error (with the invocation's id when its outcome is unknown)."""
    body: dict[str, object] = {"success": False, "error": error.message, "code": error.code}
    if isinstance(error, OutcomeUnknown) and error.invocation_id:
        body["invocation_id"] = error.invocation_id
    return body


def _error_response(body: dict[str, object], status: int) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response


def _service_error(error: ServiceError) -> Response:
    response = _error_response(error_body(error), http_status_for(error))
    retry_after = retry_after_of(error)
    if retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    if isinstance(error, Unauthenticated):
        response.headers["WWW-Authenticate"] = 'Bearer realm="lambda-action"'
    return response


def _validation_error(error: RequestSchemaValidationError) -> Response:
    return _error_response({"success": False, "error": describe_validation_error(error), "code": "InvalidRequest"}, 400)


def describe_validation_error(error: RequestSchemaValidationError) -> str:
    """A short message naming each field that failed and why."""
    details = getattr(error.validation_error, "errors", None)
    problems = details() if callable(details) else []
    if not problems or any(not problem.get("loc") for problem in problems):
        return "the request body must be a JSON object (Content-Type: application/json)"
    return "invalid request: " + describe_pydantic_errors(problems)


def describe_pydantic_errors(details: list) -> str:
    """`field: problem; field: problem` from pydantic's error details."""
    return "; ".join(
        f"{'.'.join(str(part) for part in detail.get('loc', ())) or 'body'}: {detail.get('msg', 'invalid')}"
        for detail in details
    )


def _http_error(error: HTTPException) -> Response:
    status = error.code or _INTERNAL_STATUS
    message = error.description or error.name
    if status == 415:
        message = "send the body as JSON with Content-Type: application/json"
    elif status == 400:
        # Quart raises a bare 400 when the body is not valid JSON.
        message = "the request body is not valid JSON"
    code = _HTTP_CODES.get(status, error.name.replace(" ", ""))
    response = _error_response({"success": False, "error": message, "code": code}, status)
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        # RFC 9110: a 405 names the methods the resource takes.
        response.headers["Allow"] = ", ".join(sorted(error.valid_methods))
    return response


def _unexpected_error(error: Exception) -> Response:
    # Quart runs this synchronous handler on a worker thread, outside the `except` block: pass the error itself.
    logger.error("unexpected error answering a request", exc_info=error)
    return _error_response({"success": False, "error": "internal error", "code": "InternalError"}, _INTERNAL_STATUS)


def register_error_handlers(app: Quart) -> None:
    """Answer every error with the module's JSON shape; never a stack trace."""
    app.register_error_handler(ServiceError, _service_error)
    app.register_error_handler(RequestSchemaValidationError, _validation_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
