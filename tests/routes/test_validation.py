"""The invocation routes' own body and header checks answer as quart-schema's did."""

from __future__ import annotations

from tests.records import invocation_rows


async def test_a_body_that_is_not_a_json_object_is_a_400_that_says_so(client, auth_headers):
    response = await client.post("/api/v1/invoke", json=["not", "an", "object"], headers=auth_headers)
    assert response.status_code == 400
    body = await response.get_json()
    assert body["code"] == "InvalidRequest"
    assert "JSON object" in body["error"]


async def test_a_body_missing_a_field_names_the_field(client, auth_headers):
    response = await client.post("/api/v1/invoke", json={"payload": {}}, headers=auth_headers)
    assert response.status_code == 400
    assert "function_name" in (await response.get_json())["error"]


async def test_an_idempotency_key_sent_twice_is_one_key_of_both_values(client, auth_headers, create_function, module):
    create_function("waddlebot-echo")
    body = {"function_name": "waddlebot-echo", "payload": {}}
    twice = [*auth_headers.items(), ("Idempotency-Key", "first"), ("Idempotency-Key", "second")]
    first = await client.post("/api/v1/invoke", json=body, headers=twice)
    await invocation_rows(module)
    joined = await client.post("/api/v1/invoke", json=body, headers={**auth_headers, "Idempotency-Key": "first,second"})
    assert (first.status_code, joined.status_code) == (200, 200)
    assert joined.headers["Idempotent-Replayed"] == "true"
    assert (await joined.get_json())["invocation_id"] == (await first.get_json())["invocation_id"]
