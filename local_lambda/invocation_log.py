"""An invocation's log as Lambda writes it: its own records around what the handler wrote.

In the Text log format these are the START, END and REPORT lines. In the JSON format Lambda writes them as
platform events instead (`platform.start`, `platform.runtimeDone`, `platform.report`, one JSON object a line,
each with its level), and the function's system_log_level decides which of them reach the log.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from local_lambda.manifest import FunctionVersion
from local_lambda.pool import HandlerOutcome

# Lambda's levels for its own records, and the level it uses when the function names none.
SYSTEM_LOG_LEVELS = {"DEBUG": 10, "INFO": 20, "WARN": 30}
DEFAULT_SYSTEM_LOG_LEVEL = "INFO"
TIMED_OUT = "Sandbox.Timedout"


def invocation_log(request_id: str, version: FunctionVersion, outcome: HandlerOutcome) -> bytes:
    """The invocation's log in the function's log format, ending now."""
    if version.log_format == "JSON":
        return _json_log(request_id, version, outcome, ended_at=time.time())
    return _text_log(request_id, version, outcome)


def _text_log(request_id: str, version: FunctionVersion, outcome: HandlerOutcome) -> bytes:
    parts = [f"START RequestId: {request_id} Version: {version.version}\n".encode()]
    parts.append(_handler_output(outcome))
    if outcome.platform_log:
        parts.append(f"{outcome.platform_log}\n".encode())
    parts.append(f"END RequestId: {request_id}\n".encode())
    report = (
        f"REPORT RequestId: {request_id}\tDuration: {outcome.duration_ms:.2f} ms\t"
        f"Billed Duration: {_billed_ms(outcome)} ms\tMemory Size: {version.memory_size} MB\t"
    )
    if outcome.memory_used_mb is not None:
        report += f"Max Memory Used: {outcome.memory_used_mb} MB\t"
    if outcome.init_duration_ms is not None:
        report += f"Init Duration: {outcome.init_duration_ms:.2f} ms\t"
    parts.append(f"{report}\n".encode())
    return b"".join(parts)


def _json_log(request_id: str, version: FunctionVersion, outcome: HandlerOutcome, *, ended_at: float) -> bytes:
    """Lambda's JSON form: its records as platform events, those below the system log level left out.

    The status of a failed invocation is in platform.runtimeDone and platform.report (both at WARN then), which
    take the place of the text format's separate line about a timeout or an exited runtime.
    """
    threshold = SYSTEM_LOG_LEVELS[version.system_log_level or DEFAULT_SYSTEM_LOG_LEVEL]
    status = _status(outcome)
    # Lambda's levels for these events: a failed invocation's are raised to WARN.
    runtime_done_level, report_level = ("DEBUG", "INFO") if status == "success" else ("WARN", "WARN")
    started_at = ended_at - outcome.duration_ms / 1000
    metrics: dict[str, Any] = {
        "durationMs": round(outcome.duration_ms, 3),
        "billedDurationMs": _billed_ms(outcome),
        "memorySizeMB": version.memory_size,
    }
    if outcome.memory_used_mb is not None:
        metrics["maxMemoryUsedMB"] = outcome.memory_used_mb
    if outcome.init_duration_ms is not None:
        metrics["initDurationMs"] = round(outcome.init_duration_ms, 3)

    def event(level: str, at: float, kind: str, record: dict[str, Any]) -> bytes:
        if SYSTEM_LOG_LEVELS[level] < threshold:
            return b""
        return json.dumps({"time": _moment(at), "type": kind, "record": record}).encode() + b"\n"

    return b"".join(
        [
            event("INFO", started_at, "platform.start", {"requestId": request_id, "version": version.version}),
            _handler_output(outcome),
            event(
                runtime_done_level,
                ended_at,
                "platform.runtimeDone",
                {"requestId": request_id, "status": status, "metrics": {"durationMs": metrics["durationMs"]}},
            ),
            event(
                report_level,
                ended_at,
                "platform.report",
                {"requestId": request_id, "metrics": metrics, "status": status},
            ),
        ]
    )


def _handler_output(outcome: HandlerOutcome) -> bytes:
    if not outcome.output:
        return b""
    return outcome.output if outcome.output.endswith(b"\n") else outcome.output + b"\n"


def _billed_ms(outcome: HandlerOutcome) -> int:
    return max(1, math.ceil(outcome.duration_ms))


def _status(outcome: HandlerOutcome) -> str:
    """The invocation's status as Lambda's platform events name it."""
    if outcome.function_error is None:
        return "success"
    return "timeout" if outcome.error_type == TIMED_OUT else "error"


def _moment(at: float) -> str:
    """A UTC instant to the millisecond, as Lambda writes `time`."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at * 1000) % 1000:03d}Z"
