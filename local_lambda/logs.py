"""The logs of the runtime's recent invocations, served as CloudWatch Logs' FilterLogEvents serves them.

Lambda writes each invocation's log (START, what the handler printed, END, REPORT) to the log group
`/aws/lambda/<function>`; this keeps the last RECENT_INVOCATIONS of them in memory, so that a caller that looks a
request's lines up (the module's history, or boto3's `logs.filter_log_events` pointed at this runtime) finds them
as it would on AWS.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from local_lambda.errors import InvalidParameterValue, ResourceNotFound

RECENT_INVOCATIONS = 1000
MAX_EVENTS_PER_PAGE = 10_000
LOG_GROUP_PREFIX = "/aws/lambda/"


@dataclass(frozen=True)
class _InvocationLog:
    function_name: str
    version: str
    request_id: str
    timestamp_ms: int
    lines: tuple[str, ...]


class RecentLogs:
    """The logs of the last RECENT_INVOCATIONS invocations, by request id."""

    def __init__(self, keep: int = RECENT_INVOCATIONS) -> None:
        self._keep = keep
        self._logs: OrderedDict[str, _InvocationLog] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, function_name: str, version: str, request_id: str, log: bytes) -> None:
        """Keep one invocation's log (the oldest kept is dropped past the limit)."""
        lines = tuple(log.decode(errors="replace").splitlines())
        entry = _InvocationLog(function_name, version, request_id, int(time.time() * 1000), lines)
        with self._lock:
            self._logs[request_id] = entry
            while len(self._logs) > self._keep:
                self._logs.popitem(last=False)

    def filter_log_events(self, request: dict[str, Any]) -> dict[str, Any]:
        """FilterLogEvents: the lines of a function's log group holding the pattern's term, oldest first, paged."""
        group = request.get("logGroupName")
        if not isinstance(group, str) or not group.startswith(LOG_GROUP_PREFIX):
            raise InvalidParameterValue("logGroupName must be /aws/lambda/<function name>")
        function_name = group[len(LOG_GROUP_PREFIX) :]
        term = str(request.get("filterPattern") or "").strip().strip('"')
        start = int(request.get("startTime") or 0)
        end = int(request.get("endTime") or 2**63)
        limit = int(request.get("limit") or MAX_EVENTS_PER_PAGE)
        if not 1 <= limit <= MAX_EVENTS_PER_PAGE:
            raise InvalidParameterValue(f"limit must be between 1 and {MAX_EVENTS_PER_PAGE}")
        with self._lock:
            kept = [entry for entry in self._logs.values() if entry.function_name == function_name]
        if not kept:
            raise ResourceNotFound("The specified log group does not exist.")
        events = [
            {
                "logStreamName": f"{entry.version}/[{entry.version}]{entry.request_id.replace('-', '')}",
                "timestamp": entry.timestamp_ms,
                "message": line + "\n",
                "ingestionTime": entry.timestamp_ms,
                "eventId": f"{entry.request_id}-{number}",
            }
            for entry in kept
            if start <= entry.timestamp_ms <= end
            for number, line in enumerate(entry.lines)
            if term in line or (term == entry.request_id and line)
        ]
        offset = _offset(request.get("nextToken"))
        page = events[offset : offset + limit]
        answer: dict[str, Any] = {"events": page, "searchedLogStreams": []}
        if offset + len(page) < len(events):
            answer["nextToken"] = str(offset + len(page))
        return answer


def _offset(token: Any) -> int:
    if token is None:
        return 0
    if isinstance(token, str) and token.isdigit():
        return int(token)
    raise InvalidParameterValue("nextToken is not one this runtime gave")
