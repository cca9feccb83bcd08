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

    records = [json.loads(line) for line in lines if line.startswith("{")]
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
