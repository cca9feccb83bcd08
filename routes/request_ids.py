"""X-Request-Id on every REST answer, the caller's W3C traceparent taken in, and one access-log line per request."""

from __future__ import annotations

import contextlib
import logging
import time

from quart import Quart, Response, g, request

from services.tracing import REQUEST_ID_HEADER, TRACEPARENT, enter_trace, leave_trace, trace_of

access_logger = logging.getLogger("lambda_action.access")


async def _begin() -> None:
    g.started = time.perf_counter()
    g.trace = trace_of(request.headers.get(REQUEST_ID_HEADER), request.headers.get(TRACEPARENT))
    g.trace_token = enter_trace(g.trace)


async def _finish(response: Response) -> Response:
    trace = getattr(g, "trace", None)
    if trace is not None:
        response.headers[REQUEST_ID_HEADER] = trace.request_id
    started = getattr(g, "started", None)
    duration_ms = (time.perf_counter() - started) * 1000 if started is not None else 0.0
    # The path without its query string, and never a header: nothing secret reaches this log.
    access_logger.info(
        "%s %s %d %.1fms request_id=%s",
        request.method,
        request.path,
        response.status_code,
        duration_ms,
        trace.request_id if trace is not None else "-",
    )
    return response


async def _release(_: BaseException | None) -> None:
    token = getattr(g, "trace_token", None)
    if token is not None:
        g.trace_token = None
        # Each request runs in a task of its own, whose context ends with it; where a server runs a request in
        # another context than the one it began in, there is nothing to restore.
        with contextlib.suppress(ValueError):
            leave_trace(token)


def install_request_ids(app: Quart) -> None:
    """Every request gets its trace before anything else runs (authentication's audit lines carry its id)."""
    app.before_request_funcs.setdefault(None, []).insert(0, _begin)
    app.after_request(_finish)
    app.teardown_request(_release)
