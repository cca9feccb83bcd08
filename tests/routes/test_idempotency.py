"""The Idempotency-Key header on the invoke endpoints, through the real app against the fake Lambda."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from app import Services
from tests.fake_lambda import FakeLambda
from tests.records import invocation_rows

ECHO = "waddlebot-echo"
KEY = "0d6e8f7a-3b1c-4d2e-9f80-a1b2c3d4e5f6"


@pytest.fixture
def echo(create_function) -> str:
    create_function(ECHO)
    return ECHO


async def _error(response, status: int, code: str) -> dict:
    text = await response.get_data(as_text=True)
    assert response.status_code == status, text
    body = json.loads(text)
    assert body["success"] is False
    assert body["code"] == code
    assert "Traceback" not in text
    return body


async def test_a_repeated_invoke_is_replayed_with_the_header(client, auth_headers, echo, aws: FakeLambda, module):
    headers = {**auth_headers, "Idempotency-Key": KEY}
    body = {"function_name": echo, "payload": {"command": "!hello"}}

    first = await client.post("/api/v1/invoke", json=body, headers=headers)
    await invocation_rows(module)  # shipped
    repeat = await client.post("/api/v1/invoke", json=body, headers=headers)

    assert (first.status_code, repeat.status_code) == (200, 200)
    assert "Idempotent-Replayed" not in first.headers
    assert repeat.headers["Idempotent-Replayed"] == "true"
    first_body, repeat_body = await first.get_json(), await repeat.get_json()
    assert repeat_body["invocation_id"] == first_body["invocation_id"]
    assert repeat_body["payload"] == first_body["payload"] == {"command": "!hello"}
    assert len(aws.calls("Invoke", ECHO)) == 1


async def test_an_invoke_async_repeat_is_replayed(client, auth_headers, echo, aws: FakeLambda, module):
    headers = {**auth_headers, "Idempotency-Key": KEY}
    body = {"function_name": echo, "payload": {}}

    first = await client.post("/api/v1/invoke-async", json=body, headers=headers)
    await invocation_rows(module)
    repeat = await client.post("/api/v1/invoke-async", json=body, headers=headers)

    assert (first.status_code, repeat.status_code) == (202, 202)
    assert repeat.headers["Idempotent-Replayed"] == "true"
    assert (await repeat.get_json())["request_id"] == (await first.get_json())["request_id"]
    assert len(aws.calls("Invoke", ECHO)) == 1


async def test_the_key_with_another_body_is_422(client, auth_headers, echo, aws: FakeLambda):
    headers = {**auth_headers, "Idempotency-Key": KEY}
    await client.post("/api/v1/invoke", json={"function_name": echo, "payload": {"n": 1}}, headers=headers)

    response = await client.post("/api/v1/invoke", json={"function_name": echo, "payload": {"n": 2}}, headers=headers)

    body = await _error(response, 422, "IdempotencyKeyReused")
    assert "new key" in body["error"]
    assert len(aws.calls("Invoke", ECHO)) == 1


async def test_a_repeat_while_the_first_runs_is_409_in_progress(client, auth_headers, echo, aws: FakeLambda):
    headers = {**auth_headers, "Idempotency-Key": KEY}
    body = {"function_name": echo, "payload": {}}
    gate = aws.functions[ECHO].hold = threading.Event()
    first = asyncio.ensure_future(client.post("/api/v1/invoke", json=body, headers=headers))
    try:
        await asyncio.to_thread(aws.wait_until_active, 1)
        repeat = await client.post("/api/v1/invoke", json=body, headers=headers)
    finally:
        gate.set()
    first_body = await (await first).get_json()

    error = await _error(repeat, 409, "InvocationInProgress")
    assert error["invocation_id"] == first_body["invocation_id"]
    assert repeat.headers["Retry-After"] == "1"
    assert len(aws.calls("Invoke", ECHO)) == 1


@pytest.mark.parametrize("key", ["has space", "k" * 256])
async def test_a_malformed_key_is_400_and_runs_nothing(client, auth_headers, echo, aws: FakeLambda, key: str):
    response = await client.post(
        "/api/v1/invoke", json={"function_name": echo}, headers={**auth_headers, "Idempotency-Key": key}
    )

    body = await _error(response, 400, "InvalidRequest")
    assert "Idempotency-Key" in body["error"]
    assert aws.calls("Invoke") == []


async def test_a_repeated_batch_replays_each_item(client, auth_headers, echo, aws: FakeLambda, module: Services):
    headers = {**auth_headers, "Idempotency-Key": KEY}
    body = {"invocations": [{"function_name": echo, "payload": {"i": 0}}, {"function_name": echo, "payload": {"i": 1}}]}

    first = await client.post("/api/v1/batch", json=body, headers=headers)
    await invocation_rows(module)
    repeat = await client.post("/api/v1/batch", json=body, headers=headers)
    changed = await client.post("/api/v1/batch", json={"invocations": body["invocations"][:1]}, headers=headers)

    first_ids = [item["invocation_id"] for item in (await first.get_json())["results"]]
    assert [item["invocation_id"] for item in (await repeat.get_json())["results"]] == first_ids
    await _error(changed, 422, "IdempotencyKeyReused")
    assert len(aws.calls("Invoke", ECHO)) == 2


async def test_the_header_is_documented(client):
    document = await (await client.get("/openapi.json")).get_json()
    invoke = document["paths"]["/api/v1/invoke"]["post"]

    [header] = [parameter for parameter in invoke["parameters"] if parameter["in"] == "header"]
    assert header["name"].lower() == "idempotency-key"
    assert "422" in invoke["responses"]
    assert "idempotent-replayed" in {name.lower() for name in invoke["responses"]["200"].get("headers", {})}
