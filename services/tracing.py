"""Request ids and W3C trace context: one id follows a call from its caller through the module to Lambda.

The transports set the call's trace (the caller's X-Request-Id or `x-request-id` metadata when well-formed, else
a new one; a `traceparent` when valid) for the duration of the call; the services read it to put the id in audit
lines and in the invocation record, and pass the trace on to Lambda as its `X-Amzn-Trace-Id`.
"""

from __future__ import annotations

import contextvars
import re
from dataclasses import dataclass

from services.ids import new_id

REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID_METADATA = "x-request-id"
TRACEPARENT = "traceparent"
REQUEST_ID_MAX_LENGTH = 128
# What a request id may hold: it is echoed in a header and written in logs, so nothing that could split either.
_REQUEST_ID = re.compile(rf"[A-Za-z0-9._:@/+=-]{{1,{REQUEST_ID_MAX_LENGTH}}}")
# W3C Trace Context, version 00: trace id, parent span id, flags; all-zero ids are invalid.
_TRACEPARENT = re.compile(r"00-(?P<trace>[0-9a-f]{32})-(?P<span>[0-9a-f]{16})-(?P<flags>[0-9a-f]{2})")

_current: contextvars.ContextVar[CallTrace | None] = contextvars.ContextVar("lambda_action_trace", default=None)


@dataclass(frozen=True)
class CallTrace:
    """The ids of the call being answered."""

    request_id: str
    traceparent: str | None = None

    @property
    def amzn_trace_id(self) -> str | None:
        """The traceparent as AWS X-Ray's trace header (Root, Parent, Sampled), which Lambda reads; None without one."""
        match = _TRACEPARENT.fullmatch(self.traceparent or "")
        if match is None:
            return None
        trace = match["trace"]
        sampled = int(match["flags"], 16) & 1
        return f"Root=1-{trace[:8]}-{trace[8:]};Parent={match['span']};Sampled={sampled}"


def trace_of(request_id: str | None, traceparent: str | None) -> CallTrace:
    """The trace of a call from what its caller sent: its request id when well-formed (else a new one), and its
    traceparent when valid (else none)."""
    if request_id is None or not _REQUEST_ID.fullmatch(request_id):
        request_id = new_id()
    return CallTrace(request_id=request_id, traceparent=traceparent if _valid_traceparent(traceparent) else None)


def _valid_traceparent(value: str | None) -> bool:
    match = _TRACEPARENT.fullmatch(value or "")
    return match is not None and set(match["trace"]) != {"0"} and set(match["span"]) != {"0"}


def current_trace() -> CallTrace | None:
    """The trace of the call this code runs for, if a transport set one."""
    return _current.get()


def current_request_id() -> str | None:
    """The request id of the call this code runs for, if any."""
    trace = _current.get()
    return trace.request_id if trace is not None else None


def enter_trace(trace: CallTrace) -> contextvars.Token[CallTrace | None]:
    """Make `trace` the current call's (until `leave_trace` with the token)."""
    return _current.set(trace)


def leave_trace(token: contextvars.Token[CallTrace | None]) -> None:
    _current.reset(token)
