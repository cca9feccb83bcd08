"""A handler's logging as on Lambda's Python runtime, read back through boto3's LogType=Tail."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest

from tests.local_lambda.conftest import FunctionMaker

LOGS = """
import logging

logger = logging.getLogger()

def lambda_handler(event, context):
    if event.get("info"):
        logger.setLevel(logging.INFO)
    logger.debug("a debug line")
    logger.info("an info line")
    logger.warning("a warning line")
    return "ok"
"""


def _tail(lambda_client: Any, event: dict[str, Any]) -> tuple[list[str], str]:
    response = lambda_client.invoke(FunctionName="logs", LogType="Tail", Payload=json.dumps(event).encode())
    return base64.b64decode(response["LogResult"]).decode().splitlines(), response["ResponseMetadata"]["RequestId"]


def test_the_root_logger_prints_in_lambdas_text_format(make_function: FunctionMaker, lambda_client: Any):
    make_function("logs", LOGS)

    default_lines, request_id = _tail(lambda_client, {})
    info_lines, _ = _tail(lambda_client, {"info": True})

    records = [line for line in default_lines if line.startswith("[")]
    # The root logger's level is WARNING until the handler lowers it, as on Lambda.
    assert len(records) == 1
    assert re.fullmatch(
        rf"\[WARNING\]\t\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z\t{request_id}\ta warning line", records[0]
    ), records
    assert [line.split("\t")[-1] for line in info_lines if line.startswith("[")] == ["an info line", "a warning line"]


def test_the_json_format_and_its_level_come_from_the_manifest(make_function: FunctionMaker, lambda_client: Any):
    make_function("logs", LOGS, logging_config={"log_format": "JSON", "application_log_level": "DEBUG"})

    lines, request_id = _tail(lambda_client, {})

    records = [json.loads(line) for line in lines if line.startswith('{"timestamp"')]
    assert [(record["level"], record["message"]) for record in records] == [
        ("DEBUG", "a debug line"),
        ("INFO", "an info line"),
        ("WARN", "a warning line"),
    ]
    assert {record["requestId"] for record in records} == {request_id}
    assert all(record["timestamp"].endswith("Z") and record["logger"] == "root" for record in records)


def test_a_logging_config_lambda_would_refuse_is_refused(make_function: FunctionMaker, lambda_client: Any):
    make_function("logs", LOGS, logging_config={"log_format": "Text", "application_log_level": "DEBUG"})

    with pytest.raises(lambda_client.exceptions.ResourceConflictException, match="log_format"):
        lambda_client.invoke(FunctionName="logs")


PLATFORM_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def _platform_events(lines: list[str]) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in lines if line.startswith('{"time"')]
    assert all(re.fullmatch(PLATFORM_TIME, event["time"]) for event in events), events
    return events


def test_in_the_json_format_lambdas_own_lines_are_platform_events(make_function: FunctionMaker, lambda_client: Any):
    make_function("logs", LOGS, logging_config={"log_format": "JSON"}, memory_size=256)

    cold, cold_id = _tail(lambda_client, {})
    warm, warm_id = _tail(lambda_client, {})

    # At the default system level (INFO): platform.start, the handler's records, platform.report; no text lines.
    assert not any(line.startswith(("START", "END", "REPORT")) for line in cold + warm)
    events = _platform_events(cold)
    assert [event["type"] for event in events] == ["platform.start", "platform.report"]
    assert cold[0].startswith('{"time"')
    assert cold[-1].startswith('{"time"')
    start, report = events
    assert start["record"] == {"requestId": cold_id, "version": "$LATEST"}
    assert report["record"]["requestId"] == cold_id
    assert report["record"]["status"] == "success"
    metrics = report["record"]["metrics"]
    assert set(metrics) == {"durationMs", "billedDurationMs", "memorySizeMB", "maxMemoryUsedMB", "initDurationMs"}
    assert metrics["memorySizeMB"] == 256
    assert metrics["billedDurationMs"] >= metrics["durationMs"] > 0
    assert metrics["maxMemoryUsedMB"] > 0
    assert metrics["initDurationMs"] > 0
    warm_report = _platform_events(warm)[-1]["record"]
    assert warm_report["requestId"] == warm_id
    assert "initDurationMs" not in warm_report["metrics"]  # only a cold start has one


@pytest.mark.parametrize(
    ("system_log_level", "expected"),
    [
        ("DEBUG", ["platform.start", "platform.runtimeDone", "platform.report"]),
        ("INFO", ["platform.start", "platform.report"]),
        ("WARN", []),
    ],
)
def test_the_system_log_level_filters_lambdas_own_events(
    make_function: FunctionMaker, lambda_client: Any, system_log_level: str, expected: list[str]
):
    make_function("logs", LOGS, logging_config={"log_format": "JSON", "system_log_level": system_log_level})

    lines, request_id = _tail(lambda_client, {})

    events = _platform_events(lines)
    assert [event["type"] for event in events] == expected
    assert {event["record"]["requestId"] for event in events} <= {request_id}
    # The handler's own records are filtered by the application level only (INFO by default).
    records = [json.loads(line)["message"] for line in lines if line.startswith('{"timestamp"')]
    assert records == ["an info line", "a warning line"]


def test_a_failed_invocations_platform_events_are_warnings(make_function: FunctionMaker, lambda_client: Any):
    slow = "import time\n\ndef lambda_handler(event, context):\n    time.sleep(5)\n"
    make_function("slow", slow, timeout=1, logging_config={"log_format": "JSON", "system_log_level": "WARN"})

    response = lambda_client.invoke(FunctionName="slow", LogType="Tail")

    events = _platform_events(base64.b64decode(response["LogResult"]).decode().splitlines())
    assert [(event["type"], event["record"]["status"]) for event in events] == [
        ("platform.runtimeDone", "timeout"),
        ("platform.report", "timeout"),
    ]


def test_a_system_log_level_lambda_would_refuse_is_refused(make_function: FunctionMaker, lambda_client: Any):
    make_function("text", LOGS, logging_config={"system_log_level": "DEBUG"})
    make_function("trace", LOGS, logging_config={"log_format": "JSON", "system_log_level": "TRACE"})

    with pytest.raises(lambda_client.exceptions.ResourceConflictException, match="log_format"):
        lambda_client.invoke(FunctionName="text")
    with pytest.raises(lambda_client.exceptions.ResourceConflictException, match="DEBUG, INFO, WARN"):
        lambda_client.invoke(FunctionName="trace")
