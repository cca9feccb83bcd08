"""The one mapping of domain errors to gRPC status codes, next to the REST one in routes/errors.py."""

from __future__ import annotations

import math

import grpc

from services.errors import (
    BackendNotConfigured,
    DatabaseUnavailable,
    DeadlineExceeded,
    Forbidden,
    FunctionNotFound,
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

GRPC_STATUS_BY_ERROR: dict[type[ServiceError], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    # The request itself is fine in form but too big for Lambda: still the caller's to fix.
    PayloadTooLarge: grpc.StatusCode.INVALID_ARGUMENT,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    Forbidden: grpc.StatusCode.PERMISSION_DENIED,
    FunctionNotFound: grpc.StatusCode.NOT_FOUND,
    PageNotFound: grpc.StatusCode.NOT_FOUND,
    InvocationNotFound: grpc.StatusCode.NOT_FOUND,
    # Not UNAVAILABLE nor DEADLINE_EXCEEDED, which routers retry: running the function again may do its work twice.
    OutcomeUnknown: grpc.StatusCode.ABORTED,
    Throttled: grpc.StatusCode.RESOURCE_EXHAUSTED,
    # Lambda answered with its own failure (REST's 502): gRPC's mapping of 502 is UNAVAILABLE.
    UpstreamError: grpc.StatusCode.UNAVAILABLE,
    UpstreamTimeout: grpc.StatusCode.DEADLINE_EXCEEDED,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    BackendNotConfigured: grpc.StatusCode.UNAVAILABLE,
    DatabaseUnavailable: grpc.StatusCode.UNAVAILABLE,
    InternalError: grpc.StatusCode.INTERNAL,
}

# Trailing metadata keys that carry the error's stable name and, when throttled, the seconds to wait.
ERROR_CODE_KEY = "lambda-action-error-code"
INVOCATION_ID_KEY = "lambda-action-invocation-id"
RETRY_AFTER_KEY = "retry-after"


def grpc_status_for(error: ServiceError) -> grpc.StatusCode:
    """The gRPC status of a domain error, found by walking its class hierarchy."""
    for cls in type(error).__mro__:
        if cls in GRPC_STATUS_BY_ERROR:
            return GRPC_STATUS_BY_ERROR[cls]
    return grpc.StatusCode.INTERNAL


def error_metadata(error: ServiceError) -> tuple[tuple[str, str], ...]:
    """The trailing metadata sent with a domain error."""
    metadata = [(ERROR_CODE_KEY, error.code)]
    retry_after = retry_after_of(error)
    if retry_after is not None:
        metadata.append((RETRY_AFTER_KEY, str(max(1, math.ceil(retry_after)))))
    if isinstance(error, OutcomeUnknown) and error.invocation_id:
        metadata.append((INVOCATION_ID_KEY, error.invocation_id))
    return tuple(metadata)
