"""Event invocations through boto3: InvokeAsync, Lambda's retries, and the dead-letter folder."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from local_lambda import LocalLambdaRuntime
from local_lambda.settings import SettingsError, default_max_concurrency, runtime_settings
from tests.local_lambda.conftest import FunctionMaker, wait_for

ARN_PREFIX = "arn:aws:lambda:us-east-1:000000000000:function:"
# Counts its attempts in a file, and fails until the event's `succeed_on` attempt (never without one).
FLAKY = """
from pathlib import Path

def lambda_handler(event, context):
    attempts = Path(event["attempts"])
    with attempts.open("a") as log:
        log.write(context.aws_request_id + "\\n")
    count = len(attempts.read_text().splitlines())
    if count != event.get("succeed_on"):
        raise RuntimeError(f"attempt {count} failed")
    return "done"
"""


def _attempts(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _records(dead_letter_dir: Path) -> list[dict[str, Any]]:
    if not dead_letter_dir.exists():
        return []
    return [json.loads(path.read_text()) for path in sorted(dead_letter_dir.glob("*.json"))]


def test_a_failing_event_is_retried_twice_then_written_as_lambdas_failure_record(
    make_function: FunctionMaker, lambda_client: Any, exchange_dir: Path, dead_letter_dir: Path
) -> None:
    make_function("flaky", FLAKY)
    attempts = exchange_dir / "attempts"
    event = {"attempts": str(attempts)}

    queued = lambda_client.invoke(FunctionName="flaky", InvocationType="Event", Payload=json.dumps(event))
    wait_for(lambda: _records(dead_letter_dir) != [], "the failure record")

    assert queued["StatusCode"] == 202
    request_id = queued["ResponseMetadata"]["RequestId"]
    assert _attempts(attempts) == [request_id] * 3  # the first attempt and Lambda's two retries, one request id
    [record] = _records(dead_letter_dir)
    assert record["requestContext"] == {
        "requestId": request_id,
        "functionArn": f"{ARN_PREFIX}flaky:$LATEST",
        "condition": "RetriesExhausted",
        "approximateInvokeCount": 3,
    }
    assert record["requestPayload"] == event
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"}
    assert record["responsePayload"]["errorType"] == "RuntimeError"
    assert record["responsePayload"]["errorMessage"] == "attempt 3 failed"
    assert record["version"] == "1.0"
    assert record["timestamp"].endswith("Z")
    [written] = dead_letter_dir.glob("*.json")
    assert written.name.endswith(f"-flaky-{request_id}.json")


def test_maximum_retry_attempts_from_the_manifest(
    make_function: FunctionMaker, lambda_client: Any, exchange_dir: Path, dead_letter_dir: Path
) -> None:
    make_function("once", FLAKY, event_invoke_config={"maximum_retry_attempts": 0})
    attempts = exchange_dir / "attempts"

    lambda_client.invoke(FunctionName="once", InvocationType="Event", Payload=json.dumps({"attempts": str(attempts)}))
    wait_for(lambda: _records(dead_letter_dir) != [], "the failure record")

    assert len(_attempts(attempts)) == 1
    assert _records(dead_letter_dir)[0]["requestContext"]["approximateInvokeCount"] == 1


def test_an_event_that_succeeds_on_a_retry_leaves_no_record(
    make_function: FunctionMaker,
    lambda_client: Any,
    runtime: LocalLambdaRuntime,
    exchange_dir: Path,
    dead_letter_dir: Path,
) -> None:
    make_function("recovers", FLAKY)
    attempts = exchange_dir / "attempts"

    lambda_client.invoke(
        FunctionName="recovers",
        InvocationType="Event",
        Payload=json.dumps({"attempts": str(attempts), "succeed_on": 2}),
    )
    wait_for(lambda: len(_attempts(attempts)) == 2, "the retry")
    wait_for(lambda: not runtime.runtime.events.pending, "the event to be done with")

    assert _records(dead_letter_dir) == []


def test_invoke_async_queues_an_event(make_function: FunctionMaker, lambda_client: Any, exchange_dir: Path) -> None:
    make_function("flaky", FLAKY)
    attempts = exchange_dir / "attempts"

    answer = lambda_client.invoke_async(
        FunctionName="flaky", InvokeArgs=json.dumps({"attempts": str(attempts), "succeed_on": 1})
    )
    wait_for(lambda: len(_attempts(attempts)) == 1, "the event to run")

    assert answer["Status"] == 202
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 202
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException):
        lambda_client.invoke_async(FunctionName="absent", InvokeArgs=b"{}")


def test_invoke_async_takes_the_aws_clis_path_with_its_slash(
    make_function: FunctionMaker, runtime: LocalLambdaRuntime, exchange_dir: Path
) -> None:
    make_function("flaky", FLAKY)
    attempts = exchange_dir / "attempts"
    address = urlsplit(runtime.endpoint_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    try:
        body = json.dumps({"attempts": str(attempts), "succeed_on": 1})
        connection.request("POST", "/2014-11-13/functions/flaky/invoke-async/", body)
        response = connection.getresponse()
        status, answer = response.status, json.loads(response.read())
    finally:
        connection.close()

    assert (status, answer) == (202, {"Status": 202})
    wait_for(lambda: len(_attempts(attempts)) == 1, "the event to run")


def test_get_function_event_invoke_config(make_function: FunctionMaker, lambda_client: Any) -> None:
    make_function(
        "configured",
        FLAKY,
        event_invoke_config={"maximum_retry_attempts": 1, "maximum_event_age_in_seconds": 3600},
    )
    make_function("default", FLAKY)

    config = lambda_client.get_function_event_invoke_config(FunctionName="configured")

    assert config["FunctionArn"] == f"{ARN_PREFIX}configured:$LATEST"
    assert (config["MaximumRetryAttempts"], config["MaximumEventAgeInSeconds"]) == (1, 3600)
    assert config["LastModified"].year >= 2026
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException, match="EventInvokeConfig"):
        lambda_client.get_function_event_invoke_config(FunctionName="default")


def test_runtime_settings_are_read_from_the_environment(tmp_path: Path) -> None:
    settings = runtime_settings(
        {
            "LOCAL_LAMBDA_MAX_CONCURRENCY": "12",
            "LOCAL_LAMBDA_EVENT_RETRY_DELAYS": "0.5,1",
            "LOCAL_LAMBDA_DEAD_LETTER_DIR": str(tmp_path / "dead"),
            "LOCAL_LAMBDA_PYTHONS": "/opt/python3.12/bin/python3.12:/opt/python3.13/bin/python3.13",
        }
    )
    defaults = runtime_settings({})

    assert (settings.max_concurrency, settings.event_retry_delays) == (12, (0.5, 1.0))
    assert settings.dead_letter_dir == tmp_path / "dead"
    assert settings.interpreters == ("/opt/python3.12/bin/python3.12", "/opt/python3.13/bin/python3.13")
    assert defaults.interpreters == ()
    assert defaults.max_concurrency == default_max_concurrency()
    assert 1 <= defaults.max_concurrency <= 1000
    assert defaults.event_retry_delays == (60.0, 120.0)
    assert defaults.dead_letter_dir == Path("data/local_lambda/failed-events").resolve()
    for variable, value in [
        ("LOCAL_LAMBDA_MAX_CONCURRENCY", "0"),
        ("LOCAL_LAMBDA_MAX_CONCURRENCY", "many"),
        ("LOCAL_LAMBDA_EVENT_RETRY_DELAYS", "60"),
        ("LOCAL_LAMBDA_EVENT_RETRY_DELAYS", "-1,2"),
    ]:
        with pytest.raises(SettingsError, match=variable):
            runtime_settings({variable: value})


def test_an_event_no_worker_takes_in_time_is_written_as_event_age_exceeded(
    make_function: FunctionMaker, lambda_client: Any, exchange_dir: Path, dead_letter_dir: Path
) -> None:
    # A reservation of 0 throttles every call: the event waits in the queue until it is too old, as on Lambda.
    # (60 s is the shortest MaximumEventAgeInSeconds Lambda allows, so this test takes a minute.)
    make_function("stopped", FLAKY, concurrency=0, event_invoke_config={"maximum_event_age_in_seconds": 60})
    attempts = exchange_dir / "attempts"
    event = {"attempts": str(attempts)}

    queued = lambda_client.invoke(FunctionName="stopped", InvocationType="Event", Payload=json.dumps(event))
    wait_for(lambda: _records(dead_letter_dir) != [], "the failure record", timeout=75)

    [record] = _records(dead_letter_dir)
    assert record["requestContext"] == {
        "requestId": queued["ResponseMetadata"]["RequestId"],
        "functionArn": f"{ARN_PREFIX}stopped:$LATEST",
        "condition": "EventAgeExceeded",
        "approximateInvokeCount": 0,
    }
    assert record["requestPayload"] == event
    assert "responseContext" not in record  # never run, so there is no response
    assert _attempts(attempts) == []
