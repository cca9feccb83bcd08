"""The errors the runtime answers with, named as Lambda names them so that botocore raises its own classes."""

from __future__ import annotations

from typing import Any


class LambdaApiError(Exception):
    """An error answered in Lambda's shape; `error_type` is what botocore maps to its exception class."""

    status = 500
    error_type = "ServiceException"
    kind = "Service"  # Lambda's "Type": User for the caller's mistakes, Service for the runtime's own

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason

    def body(self) -> dict[str, Any]:
        """The JSON body: botocore reads the message from either spelling, as Lambda uses both."""
        body: dict[str, Any] = {"Type": self.kind, "Message": self.message, "message": self.message}
        if self.reason is not None:
            body["Reason"] = self.reason
        return body


class ResourceNotFound(LambdaApiError):
    status = 404
    error_type = "ResourceNotFoundException"
    kind = "User"


class ResourceConflict(LambdaApiError):
    status = 409
    error_type = "ResourceConflictException"
    kind = "User"


class PreconditionFailed(LambdaApiError):
    """A RevisionId that is no longer the resource's: it changed since the caller read it."""

    status = 412
    error_type = "PreconditionFailedException"
    kind = "User"


class InvalidRequestContent(LambdaApiError):
    status = 400
    error_type = "InvalidRequestContentException"
    kind = "User"


class InvalidParameterValue(LambdaApiError):
    status = 400
    error_type = "InvalidParameterValueException"
    kind = "User"


class RequestTooLarge(LambdaApiError):
    status = 413
    error_type = "RequestTooLargeException"
    kind = "User"


class RequestEntityTooLarge(RequestTooLarge):
    """A request over the invocation type's payload limit (6 MB synchronous, 1 MB as an event), as AWS names it."""

    error_type = "RequestEntityTooLargeException"


class TooManyRequests(LambdaApiError):
    status = 429
    error_type = "TooManyRequestsException"
    kind = "User"


class UnknownOperation(LambdaApiError):
    status = 404
    error_type = "UnknownOperationException"
    kind = "User"


class ServiceFailure(LambdaApiError):
    """The runtime could not serve the request (a broken manifest, a worker that would not start)."""
