"""FilterLogEvents on /aws/lambda/<name>, through real boto3: the runtime's recent invocations' logs."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.config import Config

from local_lambda import LocalLambdaRuntime
from local_lambda.logs import RecentLogs
from tests.local_lambda.conftest import REGION, FunctionMaker, wait_for

CHATTY = """
def lambda_handler(event, context):
    print("handling", event["n"])
    return event
"""


@pytest.fixture
def logs_client(runtime: LocalLambdaRuntime) -> Any:
    return boto3.client(
        "logs",
        endpoint_url=runtime.endpoint_url,
        region_name=REGION,
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(retries={"total_max_attempts": 1}),
    )


def test_a_requests_lines_are_found_by_its_id(make_function: FunctionMaker, lambda_client: Any, logs_client: Any):
    make_function("chatty", CHATTY)
    first = lambda_client.invoke(FunctionName="chatty", Payload=b'{"n": 1}')["ResponseMetadata"]["RequestId"]
    lambda_client.invoke(FunctionName="chatty", Payload=b'{"n": 2}')

    found = logs_client.filter_log_events(logGroupName="/aws/lambda/chatty", filterPattern=f'"{first}"')

    messages = [event["message"].rstrip("\n") for event in found["events"]]
    assert messages[0] == f"START RequestId: {first} Version: $LATEST"
    assert "handling 1" in messages
    assert "handling 2" not in messages
    assert messages[-1].startswith(f"REPORT RequestId: {first}")


def test_an_event_invocations_log_is_kept_too(make_function: FunctionMaker, lambda_client: Any, logs_client: Any):
    make_function("chatty", CHATTY)
    queued = lambda_client.invoke(FunctionName="chatty", InvocationType="Event", Payload=b'{"n": 7}')
    request_id = queued["ResponseMetadata"]["RequestId"]

    def logged() -> bool:
        try:
            found = logs_client.filter_log_events(logGroupName="/aws/lambda/chatty", filterPattern=f'"{request_id}"')
        except logs_client.exceptions.ResourceNotFoundException:
            return False
        return any("handling 7" in event["message"] for event in found["events"])

    wait_for(logged, "the event's log")


def test_a_function_that_never_ran_has_no_log_group(make_function: FunctionMaker, logs_client: Any):
    make_function("quiet", CHATTY)

    with pytest.raises(logs_client.exceptions.ResourceNotFoundException):
        logs_client.filter_log_events(logGroupName="/aws/lambda/quiet")


def test_only_the_last_invocations_are_kept_and_pages_follow_their_token():
    logs = RecentLogs(keep=3)
    for number in range(5):
        logs.add("f", "$LATEST", f"request-{number}", f"START {number}\nline {number}\nEND {number}\n".encode())

    pages = [logs.filter_log_events({"logGroupName": "/aws/lambda/f", "limit": 4})]
    while "nextToken" in pages[-1]:
        token = pages[-1]["nextToken"]
        pages.append(logs.filter_log_events({"logGroupName": "/aws/lambda/f", "limit": 4, "nextToken": token}))

    messages = [event["message"] for page in pages for event in page["events"]]
    assert [len(page["events"]) for page in pages] == [4, 4, 1]
    assert messages[0] == "START 2\n"
    assert messages[-1] == "END 4\n"
