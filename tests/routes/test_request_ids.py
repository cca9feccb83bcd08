"""X-Request-Id and traceparent over REST: echoed or made, in the record and the audit and access lines, and the
trace passed on to Lambda."""

from __future__ import annotations

import logging

import pytest

from app import Services
from tests.fake_lambda import FakeLambda
from tests.records import invocation_row

ECHO = "waddlebot-echo"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def echo(aws: FakeLambda) -> str:
    aws.add_function(ECHO)
    return ECHO


async def test_the_callers_id_follows_the_call_to_the_record_and_the_logs(
    client, auth_headers, echo, aws: FakeLambda, module: Services, caplog
):
    caplog.set_level(logging.INFO)
    headers = {**auth_headers, "X-Request-Id": "router-cmd-42", "traceparent": TRACEPARENT}

    response = await client.post("/api/v1/invoke", json={"function_name": echo}, headers=headers)

    assert response.headers["X-Request-Id"] == "router-cmd-42"
    invocation_id = (await response.get_json())["invocation_id"]
    row = await invocation_row(module, invocation_id)
    assert row is not None
    assert row["x_request_id"] == "router-cmd-42"
    [sent] = aws.calls("Invoke", ECHO)
    assert (
        sent.headers["x-amzn-trace-id"] == "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1"
    )
    lines = [record.getMessage() for record in caplog.records]
    assert any(line.startswith("INVOKE ") and line.endswith("request_id=router-cmd-42") for line in lines), lines
    assert any(
        line.startswith("POST /api/v1/invoke 200 ") and line.endswith("request_id=router-cmd-42") for line in lines
    ), lines


async def test_without_an_id_one_is_made_and_errors_carry_it_too(client, caplog):
    caplog.set_level(logging.INFO)

    response = await client.post("/api/v1/invoke", json={"function_name": ECHO}, headers={"X-Request-Id": "bad id!"})

    assert response.status_code == 401
    made = response.headers["X-Request-Id"]
    assert len(made) == 32
    access = [record.getMessage() for record in caplog.records if record.name == "lambda_action.access"]
    assert access == [f"POST /api/v1/invoke 401 {access[0].split()[3]} request_id={made}"]


async def test_the_access_line_holds_no_token_nor_query(client, auth_headers, caplog):
    caplog.set_level(logging.INFO)

    await client.get("/api/v1/functions?next_marker=secret-ish", headers=auth_headers)

    [line] = [record.getMessage() for record in caplog.records if record.name == "lambda_action.access"]
    assert line.startswith("GET /api/v1/functions ")
    assert "secret-ish" not in line
    assert auth_headers["Authorization"].split()[1] not in line
