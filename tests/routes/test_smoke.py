"""A first pass through the real app: token, invoke against the fake Lambda, and the invocation's record."""

from __future__ import annotations

from app import Services
from tests.records import invocation_row


async def test_invoke_returns_the_function_result_and_records_it(
    client, auth_headers, create_function, module: Services
):
    create_function("waddlebot-echo")
    response = await client.post(
        "/api/v1/invoke",
        json={"function_name": "waddlebot-echo", "payload": {"command": "!help"}},
        headers=auth_headers,
    )
    body = await response.get_json()
    assert response.status_code == 200, body
    assert body["success"] is True
    assert body["payload"] == {"command": "!help"}
    record = await invocation_row(module, body["invocation_id"])
    assert record["function_name"] == "waddlebot-echo"
    assert record["success"] is True
    assert record["caller"] == "client:test-client"
    assert record["transport"] == "rest"
    assert record["completed_at"] is not None
