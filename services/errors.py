"""The one hierarchy of domain errors; transports map these to HTTP statuses and gRPC codes."""

from __future__ import annotations


class ServiceError(Exception):
    """An error the module answers with a message for the caller; `code` is its stable name."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def code(self) -> str:
        return type(self).__name__


class InvalidRequest(ServiceError):
    """The caller sent something the module or Lambda cannot take."""


class PayloadTooLarge(InvalidRequest):
    """The payload is over Lambda's limit for this invocation type."""


class IdempotencyKeyReused(InvalidRequest):
    """The Idempotency-Key was given, within the window, to a request with a different body."""


class Unauthenticated(ServiceError):
    """No token, a bad token, or wrong client credentials."""


class Forbidden(ServiceError):
    """The caller is known but may not reach this function."""


class FunctionNotFound(ServiceError):
    """Lambda has no such function, version or alias."""


class InvocationNotFound(ServiceError):
    """No invocation with this id is recorded for this caller (another client's is not told apart from none)."""


class PageNotFound(ServiceError):
    """No page of the listing starts at this marker (only markers a previous page gave are)."""


class Throttled(ServiceError):
    """Lambda throttled the call; `retry_after` is how long to wait, in seconds, when known."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooManyFailedAttempts(Throttled):
    """Too many wrong credentials lately for this client id or from this address; wait before trying again."""


class Busy(Throttled):
    """The module is doing as much of this kind of work as it allows at once (checking secrets); retry shortly."""


class ConcurrencyLimitReached(Throttled):
    """The module has MAX_CONCURRENT_REQUESTS invocations in flight already."""


class UpstreamError(ServiceError):
    """Lambda answered with an error that is not the caller's fault."""


class UpstreamUnavailable(UpstreamError):
    """Lambda could not be reached."""


class UpstreamTimeout(ServiceError):
    """Lambda did not answer in time."""


class DeadlineExceeded(ServiceError):
    """The caller's deadline passed before the call could be sent to Lambda."""


class OutcomeUnknown(ServiceError):
    """The invocation may have run (or may still be running) but this answer cannot say how it ended.

    Not to be retried blindly: running the function again may do its work twice. Its record, under
    `invocation_id`, says how it ended once it has.
    """

    def __init__(self, message: str, invocation_id: str = "") -> None:
        super().__init__(message)
        self.invocation_id = invocation_id


class InvocationInProgress(OutcomeUnknown):
    """An earlier request with the same Idempotency-Key started an invocation whose outcome is not recorded yet."""

    def __init__(self, message: str, invocation_id: str = "", retry_after: float | None = 1.0) -> None:
        super().__init__(message, invocation_id)
        self.retry_after = retry_after


class BackendNotConfigured(ServiceError):
    """The module has no usable Lambda backend (no credentials, no endpoint)."""


class DatabaseUnavailable(ServiceError):
    """The database did not answer."""


class InternalError(ServiceError):
    """Something the module did not expect; the details go to the log, never to the caller."""

    def __init__(self, message: str = "internal error") -> None:
        super().__init__(message)


class JournalFull(DatabaseUnavailable):
    """The local invocation journal is full (the database has been away): a new invocation could not be recorded."""


def retry_after_of(error: ServiceError) -> float | None:
    """Seconds the caller should wait before trying again, when the error says (throttling, an invocation under way)."""
    retry_after = getattr(error, "retry_after", None)
    return float(retry_after) if retry_after is not None else None
