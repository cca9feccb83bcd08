"""Invoke through boto3: invocation types, qualifiers, logs, client context, and the context handlers get."""

from __future__ import annotations

import base64
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from local_lambda import LocalLambdaRuntime
from tests.local_lambda.conftest import GATHERING, FunctionMaker, invoke_json, wait_for

ECHO = """
def lambda_handler(event, context):
    return event
"""


def test_request_response_returns_the_handler_result(make_function: FunctionMaker, lambda_client: Any) -> None:
    make_function("echo", ECHO)

    response, payload = invoke_json(lambda_client, "echo", {"command": "!help", "user": "john"})

    assert response["StatusCode"] == 200
    assert payload == {"command": "!help", "user": "john"}
    assert response["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in response
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amzn-requestid"] == headers["x-amz-request-id"] == response["ResponseMetadata"]["RequestId"]


def test_an_empty_payload_is_an_empty_event(make_function: FunctionMaker, lambda_client: Any) -> None:
    make_function("echo", ECHO)

    response = lambda_client.invoke(FunctionName="echo")

    assert json.loads(response["Payload"].read()) == {}


def test_event_answers_202_and_runs_the_function(
    make_function: FunctionMaker, lambda_client: Any, exchange_dir: Path
) -> None:
    make_function(
        "writer",
        """
        from pathlib import Path

        def lambda_handler(event, context):
            Path(event["path"]).write_text(event["text"])
        """,
    )
    marker = exchange_dir / "event-ran.txt"

    response = lambda_client.invoke(
        FunctionName="writer", InvocationType="Event", Payload=json.dumps({"path": str(marker), "text": "ran"})
    )

    assert response["StatusCode"] == 202
    assert response["Payload"].read() == b""
    wait_for(lambda: marker.exists() and marker.read_text() == "ran", "the Event invocation writing its file")


def test_dry_run_checks_the_function_without_running_it(
    make_function: FunctionMaker, lambda_client: Any, runtime: LocalLambdaRuntime
) -> None:
    make_function("echo", ECHO, aliases={"edge": "$LATEST"})

    response = lambda_client.invoke(FunctionName="echo", InvocationType="DryRun", Qualifier="edge")

    assert response["StatusCode"] == 204
    assert runtime.worker_pids("echo") == []  # nothing was started
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException):
        lambda_client.invoke(FunctionName="echo", InvocationType="DryRun", Qualifier="nope")


QUALIFIED = """
import os

def lambda_handler(event, context):
    return {
        "code": CODE,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "environment_version": os.environ["AWS_LAMBDA_FUNCTION_VERSION"],
    }
"""
ARN = "arn:aws:lambda:us-east-1:000000000000:function:greeter"


@pytest.fixture
def versioned_function(make_function: FunctionMaker) -> Path:
    """greeter: $LATEST says "latest", version 1 (a copy under versions/1) says "one"; live -> 1, edge -> $LATEST."""
    directory = make_function(
        "greeter",
        'CODE = "latest"\n' + QUALIFIED,
        versions={"1": {"code": "versions/1"}},
        aliases={"live": "1", "edge": "$LATEST"},
    )
    (directory / "versions" / "1").mkdir(parents=True)
    (directory / "versions" / "1" / "handler.py").write_text('CODE = "one"\n' + QUALIFIED)
    return directory


@pytest.mark.parametrize(
    ("function_name", "qualifier", "code", "executed_version", "invoked_arn"),
    [
        ("greeter", None, "latest", "$LATEST", ARN),
        ("greeter", "$LATEST", "latest", "$LATEST", f"{ARN}:$LATEST"),
        ("greeter", "1", "one", "1", f"{ARN}:1"),
        ("greeter", "live", "one", "1", f"{ARN}:live"),
        ("greeter", "edge", "latest", "$LATEST", f"{ARN}:edge"),
        ("greeter:live", None, "one", "1", f"{ARN}:live"),
        ("greeter:1", "1", "one", "1", f"{ARN}:1"),
        (ARN, None, "latest", "$LATEST", ARN),
        (f"{ARN}:live", None, "one", "1", f"{ARN}:live"),
        ("000000000000:function:greeter:1", None, "one", "1", f"{ARN}:1"),
    ],
)
def test_qualifiers_select_the_version_that_runs(
    versioned_function: Path,
    lambda_client: Any,
    function_name: str,
    qualifier: str | None,
    code: str,
    executed_version: str,
    invoked_arn: str,
) -> None:
    options = {} if qualifier is None else {"Qualifier": qualifier}

    response, payload = invoke_json(lambda_client, function_name, **options)

    assert response["ExecutedVersion"] == executed_version
    assert payload == {
        "code": code,
        "function_version": executed_version,
        "invoked_function_arn": invoked_arn,
        "environment_version": executed_version,
    }


def test_unknown_and_conflicting_qualifiers_are_refused(versioned_function: Path, lambda_client: Any) -> None:
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException, match="greeter:2"):
        lambda_client.invoke(FunctionName="greeter", Qualifier="2")
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException):
        lambda_client.invoke(FunctionName="greeter:nope")
    with pytest.raises(lambda_client.exceptions.InvalidParameterValueException, match="derived qualifier"):
        lambda_client.invoke(FunctionName="greeter:live", Qualifier="1")


def test_tail_returns_the_invocations_log(make_function: FunctionMaker, lambda_client: Any) -> None:
    make_function(
        "chatty",
        """
        import sys

        def lambda_handler(event, context):
            print("hello from the handler")
            print("a warning on stderr", file=sys.stderr)
            return "ok"
        """,
    )

    response = lambda_client.invoke(FunctionName="chatty", LogType="Tail")

    request_id = response["ResponseMetadata"]["RequestId"]
    log = base64.b64decode(response["LogResult"]).decode()
    assert f"START RequestId: {request_id} Version: $LATEST" in log
    assert "hello from the handler\n" in log
    assert "a warning on stderr\n" in log
    assert f"END RequestId: {request_id}" in log
    assert f"REPORT RequestId: {request_id}" in log
    # The log belongs to one invocation: the next one's tail does not repeat it.
    again = base64.b64decode(lambda_client.invoke(FunctionName="chatty", LogType="Tail")["LogResult"]).decode()
    assert again.count("hello from the handler") == 1
    assert "LogResult" not in lambda_client.invoke(FunctionName="chatty")


def test_tail_is_the_last_4_kb(make_function: FunctionMaker, lambda_client: Any) -> None:
    make_function(
        "verbose",
        """
        def lambda_handler(event, context):
            for number in range(2000):
                print(f"line {number}")
            print("the last line")
        """,
    )

    response = lambda_client.invoke(FunctionName="verbose", LogType="Tail")

    log = base64.b64decode(response["LogResult"])
    assert len(log) == 4096
    assert b"the last line\n" in log
    assert b"line 1999\n" in log
    assert b"line 0\n" not in log
    assert log.rstrip().split(b"\n")[-1].startswith(b"REPORT RequestId:")


def test_client_context_reaches_the_handler(make_function: FunctionMaker, lambda_client: Any) -> None:
    make_function(
        "contextual",
        """
        def lambda_handler(event, context):
            client_context = context.client_context
            if client_context is None:
                return None
            return {
                "custom": client_context.custom,
                "env": client_context.env,
                "app_title": client_context.client.app_title,
            }
        """,
    )
    client_context = {"client": {"app_title": "WaddleBot"}, "custom": {"channel": "general"}, "env": {"locale": "en"}}
    encoded = base64.b64encode(json.dumps(client_context).encode()).decode()

    _, payload = invoke_json(lambda_client, "contextual", ClientContext=encoded)
    _, without = invoke_json(lambda_client, "contextual")

    assert payload == {"custom": {"channel": "general"}, "env": {"locale": "en"}, "app_title": "WaddleBot"}
    assert without is None
    with pytest.raises(lambda_client.exceptions.InvalidRequestContentException, match="Client context"):
        lambda_client.invoke(FunctionName="contextual", ClientContext="not base64 json")


def test_the_handler_gets_lambdas_context_environment_and_folder(
    make_function: FunctionMaker, lambda_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = make_function(
        "introspective",
        """
        import os
        import sys

        import helper  # a module next to the handler: the function's folder is on sys.path

        def lambda_handler(event, context):
            return {
                "function_name": context.function_name,
                "function_version": context.function_version,
                "memory_limit_in_mb": context.memory_limit_in_mb,
                "aws_request_id": context.aws_request_id,
                "log_group_name": context.log_group_name,
                "log_stream_name": context.log_stream_name,
                "remaining_ms": context.get_remaining_time_in_millis(),
                "helper": helper.VALUE,
                "cwd": os.getcwd(),
                "greeting": os.environ.get("GREETING"),
                "function_name_variable": os.environ.get("AWS_LAMBDA_FUNCTION_NAME"),
                "region": os.environ.get("AWS_REGION"),
                "gateway_secret": os.environ.get("MODULE_SECRET_KEY"),
            }
        """,
        memory_size=256,
        timeout=5,
        environment={"GREETING": "hello"},
    )
    (directory / "helper.py").write_text("VALUE = 42\n")
    monkeypatch.setenv("MODULE_SECRET_KEY", "the gateway's own secret")

    response, payload = invoke_json(lambda_client, "introspective")

    assert payload["function_name"] == payload["function_name_variable"] == "introspective"
    assert payload["function_version"] == "$LATEST"
    assert payload["memory_limit_in_mb"] == "256"  # a string, as Lambda's Python runtime gives it
    assert payload["aws_request_id"] == response["ResponseMetadata"]["RequestId"]
    assert payload["log_group_name"] == "/aws/lambda/introspective"
    assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}", payload["log_stream_name"])
    assert 0 < payload["remaining_ms"] <= 5000
    assert payload["helper"] == 42
    assert Path(payload["cwd"]).resolve() == directory.resolve()
    assert payload["greeting"] == "hello"
    assert payload["region"] == "us-east-1"
    assert payload["gateway_secret"] is None  # workers do not inherit the runtime's whole environment


def test_warm_workers_are_reused(make_function: FunctionMaker, lambda_client: Any, runtime: LocalLambdaRuntime) -> None:
    make_function(
        "pid",
        """
        import os

        calls = 0

        def lambda_handler(event, context):
            global calls
            calls += 1
            return {"pid": os.getpid(), "calls": calls}
        """,
    )

    answers = [invoke_json(lambda_client, "pid")[1] for _ in range(3)]

    assert [answer["calls"] for answer in answers] == [1, 2, 3]  # the module was imported once
    assert len({answer["pid"] for answer in answers}) == 1
    assert runtime.worker_pids("pid") == [answers[0]["pid"]]
    assert answers[0]["pid"] != os.getpid()


def test_concurrent_calls_get_their_own_workers_up_to_the_concurrency(
    make_function: FunctionMaker, lambda_client: Any, runtime: LocalLambdaRuntime, exchange_dir: Path
) -> None:
    make_function(
        "gathering",
        GATHERING,
        concurrency=3,
    )
    folder = exchange_dir / "arrivals"
    folder.mkdir()
    folder.chmod(0o777)  # the handlers write in it

    with ThreadPoolExecutor(3) as pool:
        calls = [
            pool.submit(invoke_json, lambda_client, "gathering", {"folder": str(folder), "expected": 3})
            for _ in range(3)
        ]
        pids = {call.result()[1] for call in calls}

    assert len(pids) == 3  # all three ran at once, each in its own worker
    assert sorted(runtime.worker_pids("gathering")) == sorted(pids)
