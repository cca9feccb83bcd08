"""Bad input through the real app: a 400 in the one error shape that says what to fix, never a 500."""

from __future__ import annotations

import pytest

from tests.conftest import TEST_CLIENT_SECRET

ECHO = "waddlebot-echo"
POST_ENDPOINTS = ["/api/v1/token", "/api/v1/invoke", "/api/v1/invoke-async", "/api/v1/batch"]
TOO_DEEP = 5000


async def _error(response, status: int, code: str, says: str) -> dict:
    body = await response.get_json()
    assert response.status_code == status, body
    assert body == {"success": False, "error": body["error"], "code": code}
    assert says in body["error"], body["error"]
    assert "Traceback" not in body["error"]
    return body


@pytest.fixture
def echo(create_function) -> str:
    create_function(ECHO)
    return ECHO


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("path", POST_ENDPOINTS)
async def test_a_body_that_is_not_utf8_is_refused(client, auth_headers, path):
    headers = {**auth_headers, "Content-Type": "application/json"}
    response = await client.post(path, data=b'{"function_name": "\xff"}', headers=headers)
    await _error(response, 400, "InvalidRequest", "UTF-8")


@pytest.mark.parametrize("path", POST_ENDPOINTS)
async def test_a_body_nested_too_deep_is_refused(client, auth_headers, path):
    headers = {**auth_headers, "Content-Type": "application/json"}
    body = '{"function_name": "waddlebot-echo", "payload": ' + _nested(TOO_DEEP) + "}"
    response = await client.post(path, data=body.encode(), headers=headers)
    await _error(response, 400, "InvalidRequest", "nested")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e400"])
async def test_a_body_with_a_number_json_cannot_hold_is_refused(client, auth_headers, constant):
    headers = {**auth_headers, "Content-Type": "application/json"}
    body = '{"function_name": "waddlebot-echo", "payload": {"x": ' + constant + "}}"
    response = await client.post("/api/v1/invoke", data=body.encode(), headers=headers)
    await _error(response, 400, "InvalidRequest", "number")


@pytest.mark.parametrize(
    "field",
    [
        pytest.param({"payload": _nested(TOO_DEEP)}, id="payload as text"),
        pytest.param({"payload": '{"x": NaN}'}, id="payload text with NaN"),
        pytest.param({"payload": '{"x": 1e400}'}, id="payload text with 1e400"),
    ],
)
async def test_a_payload_given_as_text_is_held_to_the_same_rules(client, auth_headers, echo, field):
    response = await client.post("/api/v1/invoke", json={"function_name": echo, **field}, headers=auth_headers)
    await _error(response, 400, "InvalidRequest", "payload")


async def test_a_batch_item_nested_too_deep_fails_alone(client, auth_headers, echo):
    items = [{"function_name": echo, "payload": _nested(TOO_DEEP)}, {"function_name": echo, "payload": {"n": 1}}]
    response = await client.post("/api/v1/batch", json={"invocations": items}, headers=auth_headers)
    body = await response.get_json()
    assert response.status_code == 200, body
    first, second = body["results"]
    assert (first["success"], first["code"]) == (False, "InvalidRequest")
    assert "nested" in first["error"]
    assert second["success"] is True


async def test_a_nul_in_the_client_id_is_refused_as_bad_credentials(client):
    response = await client.post("/api/v1/token", json={"client_id": "bot\x00one", "client_secret": TEST_CLIENT_SECRET})
    await _error(response, 401, "Unauthenticated", "client")


async def test_json_nested_within_the_limit_is_taken(client, auth_headers, echo):
    payload = {"a": [[[[{"b": [1, 2, {"c": None}]}]]]]}
    body = {"function_name": echo, "payload": payload}
    response = await client.post("/api/v1/invoke", json=body, headers=auth_headers)
    body = await response.get_json()
    assert response.status_code == 200, body
    assert body["payload"] == payload
