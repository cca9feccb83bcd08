"""POST /api/v1/invoke, /invoke-async and /batch through the real app, against the fake Lambda (which echoes)."""

from __future__ import annotations

import json

import pytest

from app import Services
from tests.conftest import service_token
from tests.fake_lambda import ACCOUNT_ID
from tests.records import invocation_rows

ECHO = "waddlebot-echo"
ERROR_KEYS = {"success", "error", "code"}


@pytest.fixture
def echo(create_function) -> str:
    create_function(ECHO)
    create_function("other-echo")
    return ECHO


async def _records(module: Services) -> list[dict]:
    return await invocation_rows(module)


async def _error(response, status: int, code: str) -> dict:
    text = await response.get_data(as_text=True)
    assert response.status_code == status, text
    body = json.loads(text)
    assert set(body) == ERROR_KEYS
    assert body["success"] is False
    assert body["code"] == code
    assert isinstance(body["error"], str)
    assert body["error"]
    assert "Traceback" not in text
    assert 'File "' not in text
    return body


async def test_payload_as_a_json_value_and_as_json_text_reach_lambda_alike(client, auth_headers, echo, module):
    as_value = await client.post(
        "/api/v1/invoke", json={"function_name": echo, "payload": {"n": [1, 2], "s": "é"}}, headers=auth_headers
    )
    as_text = await client.post(
        "/api/v1/invoke", json={"function_name": echo, "payload": '{"n":[1,2],"s":"é"}'}, headers=auth_headers
    )
    first, second = await as_value.get_json(), await as_text.get_json()
    assert (as_value.status_code, as_text.status_code) == (200, 200)
    assert first["payload"] == second["payload"] == {"n": [1, 2], "s": "é"}
    assert first["success"] is second["success"] is True
    assert first["status_code"] == second["status_code"] == 200
    assert first["invocation_id"] != second["invocation_id"]
    assert isinstance(first["duration_ms"], float)
    records = await _records(module)
    assert json.loads(records[0]["payload"]) == json.loads(records[1]["payload"]) == {"n": [1, 2], "s": "é"}


async def test_a_missing_payload_is_sent_as_an_empty_object(client, auth_headers, echo, module):
    response = await client.post("/api/v1/invoke", json={"function_name": echo}, headers=auth_headers)
    assert response.status_code == 200
    assert (await _records(module))[0]["payload"] == "{}"


async def test_a_payload_string_that_is_not_json_is_refused(client, auth_headers, echo, module):
    response = await client.post(
        "/api/v1/invoke", json={"function_name": echo, "payload": "not json"}, headers=auth_headers
    )
    await _error(response, 400, "InvalidRequest")
    assert await _records(module) == []


async def test_an_event_invocation_is_accepted_with_202(client, auth_headers, echo, module):
    response = await client.post(
        "/api/v1/invoke", json={"function_name": echo, "invocation_type": "Event"}, headers=auth_headers
    )
    body = await response.get_json()
    assert response.status_code == 202, body
    assert body["status_code"] == 202
    assert body["success"] is True
    record = (await _records(module))[0]
    assert record["invocation_type"] == "Event"
    assert record["status_code"] == 202


async def test_a_dry_run_answers_204_inside_a_200(client, auth_headers, echo):
    response = await client.post(
        "/api/v1/invoke", json={"function_name": echo, "invocation_type": "DryRun"}, headers=auth_headers
    )
    body = await response.get_json()
    assert response.status_code == 200, body
    assert body["status_code"] == 204
    assert body["success"] is True


async def test_alias_and_version_together_are_refused(client, auth_headers, echo, module):
    response = await client.post(
        "/api/v1/invoke", json={"function_name": echo, "alias": "live", "version": "1"}, headers=auth_headers
    )
    body = await _error(response, 400, "InvalidRequest")
    assert "alias" in body["error"]
    assert await _records(module) == []


@pytest.mark.parametrize("name", ["other-echo", f"arn:aws:lambda:us-east-1:{ACCOUNT_ID}:function:other-echo"])
async def test_a_function_outside_the_prefix_is_forbidden(client, auth_headers, echo, module, name):
    response = await client.post("/api/v1/invoke", json={"function_name": name}, headers=auth_headers)
    body = await _error(response, 403, "Forbidden")
    assert "waddlebot-" in body["error"]
    # Refused, never sent, and on record as refused, under the name as given.
    [record] = await _records(module)
    assert (record["function_name"], record["success"], record["error_code"]) == (name, False, "Forbidden")


async def test_an_arn_of_another_account_is_forbidden(client, auth_headers, echo, aws):
    name = f"arn:aws:lambda:us-east-1:999999999999:function:{ECHO}"
    response = await client.post("/api/v1/invoke", json={"function_name": name}, headers=auth_headers)
    body = await _error(response, 403, "Forbidden")
    assert f"only the functions of account {ACCOUNT_ID}" in body["error"]
    assert aws.calls("Invoke") == []


@pytest.mark.parametrize("name", [f"{ECHO}:live", "waddlebot-bad name", "x" * 65])
async def test_a_function_name_lambda_cannot_take_is_refused(client, auth_headers, echo, name):
    response = await client.post("/api/v1/invoke", json={"function_name": name}, headers=auth_headers)
    await _error(response, 400, "InvalidRequest")


@pytest.mark.parametrize(
    "body",
    [
        {"function_name": ECHO, "unexpected": 1},
        {"function_name": 5},
        {"function_name": ""},
        {"payload": {}},
        {"function_name": ECHO, "invocation_type": "Sometime"},
        {"function_name": ECHO, "client_context": "not an object"},
        {"function_name": ECHO, "alias": ["live"]},
        [ECHO],
        "text",
    ],
)
async def test_a_malformed_body_is_refused_with_the_error_shape(client, auth_headers, echo, module, body):
    response = await client.post("/api/v1/invoke", json=body, headers=auth_headers)
    await _error(response, 400, "InvalidRequest")
    assert await _records(module) == []


async def test_a_body_that_is_not_json_is_refused(client, auth_headers, echo):
    headers = {**auth_headers, "Content-Type": "application/json"}
    response = await client.post("/api/v1/invoke", data='{"function_name": ', headers=headers)
    await _error(response, 400, "InvalidRequest")


async def test_a_body_without_a_json_content_type_is_refused(client, auth_headers, echo):
    response = await client.post("/api/v1/invoke", data=json.dumps({"function_name": ECHO}), headers=auth_headers)
    body = await _error(response, 400, "InvalidRequest")
    assert "Content-Type" in body["error"]


async def test_a_payload_over_lambdas_synchronous_limit_is_refused_with_413(client, auth_headers, echo, module):
    payload = {"data": "x" * (6 * 1024 * 1024)}
    response = await client.post(
        "/api/v1/invoke", json={"function_name": echo, "payload": payload}, headers=auth_headers
    )
    await _error(response, 413, "PayloadTooLarge")
    assert await _records(module) == []


async def test_an_event_payload_over_one_megabyte_is_refused_with_413(client, auth_headers, echo):
    payload = {"data": "x" * (1024 * 1024)}
    response = await client.post(
        "/api/v1/invoke-async", json={"function_name": echo, "payload": payload}, headers=auth_headers
    )
    await _error(response, 413, "PayloadTooLarge")


async def test_a_request_body_over_the_servers_limit_is_refused_with_413(client, auth_headers, echo):
    payload = "x" * (17 * 1024 * 1024)
    response = await client.post(
        "/api/v1/invoke", json={"function_name": echo, "payload": payload}, headers=auth_headers
    )
    await _error(response, 413, "PayloadTooLarge")


async def test_invoke_async_queues_an_event_and_answers_202_with_the_request_id(client, auth_headers, echo, module):
    response = await client.post(
        "/api/v1/invoke-async", json={"function_name": echo, "payload": {"a": 1}}, headers=auth_headers
    )
    body = await response.get_json()
    assert response.status_code == 202, body
    assert set(body) == {"success", "status_code", "request_id", "invocation_id"}
    assert body["success"] is True
    assert body["status_code"] == 202
    assert body["request_id"]
    record = (await _records(module))[0]
    assert record["invocation_id"] == body["invocation_id"]
    assert record["invocation_type"] == "Event"
    assert record["request_id"] == body["request_id"]
    assert json.loads(record["payload"]) == {"a": 1}


async def test_invoke_async_refuses_unknown_fields(client, auth_headers, echo):
    response = await client.post(
        "/api/v1/invoke-async", json={"function_name": echo, "invocation_type": "Event"}, headers=auth_headers
    )
    await _error(response, 400, "InvalidRequest")


async def test_a_batch_answers_each_item_in_order_with_its_own_error(client, auth_headers, echo, module):
    invocations = [
        {"function_name": echo, "payload": {"item": 0}},
        {"payload": {"item": 1}},
        {"function_name": "other-echo", "payload": {"item": 2}},
        {"function_name": echo, "payload": {"item": 3}},
        {"function_name": echo, "alias": "live", "version": "1"},
        {"function_name": echo, "payload": {"item": 5}, "invocation_type": "Event"},
    ]
    response = await client.post("/api/v1/batch", json={"invocations": invocations}, headers=auth_headers)
    body = await response.get_json()
    assert response.status_code == 200, body
    assert body["success"] is True
    results = body["results"]
    assert len(results) == 6
    assert results[0]["success"] is True
    assert results[0]["payload"] == {"item": 0}
    assert results[1]["success"] is False
    assert results[1]["code"] == "InvalidRequest"
    assert results[1]["status_code"] == 400
    assert "invocations[1]" in results[1]["error"]
    assert "function_name" in results[1]["error"]
    assert results[2]["success"] is False
    assert results[2]["code"] == "Forbidden"
    assert results[2]["status_code"] == 403
    assert results[3]["payload"] == {"item": 3}
    assert results[4]["code"] == "InvalidRequest"
    assert "alias or version" in results[4]["error"]
    assert results[5]["success"] is True
    assert results[5]["status_code"] == 202
    records = await _records(module)
    # The malformed items never became invocations; the forbidden one is on record as refused.
    assert sorted(json.loads(record["payload"])["item"] for record in records) == [0, 2, 3, 5]
    assert [record["error_code"] for record in records if not record["success"]] == ["Forbidden"]


async def test_a_batch_whose_item_is_not_an_object_is_refused_whole(client, auth_headers, echo, module):
    invocations = [{"function_name": echo}, 7]
    response = await client.post("/api/v1/batch", json={"invocations": invocations}, headers=auth_headers)
    body = await _error(response, 400, "InvalidRequest")
    assert "invocations.1" in body["error"]
    assert await _records(module) == []


async def test_a_batch_over_max_batch_size_is_refused(client, auth_headers, echo, module):
    invocations = [{"function_name": echo}] * (module.settings.max_batch_size + 1)
    response = await client.post("/api/v1/batch", json={"invocations": invocations}, headers=auth_headers)
    body = await _error(response, 400, "InvalidRequest")
    assert "MAX_BATCH_SIZE" in body["error"]
    assert await _records(module) == []


async def test_a_batch_of_max_batch_size_runs(client, auth_headers, echo, module):
    invocations = [{"function_name": echo, "payload": {"i": i}} for i in range(module.settings.max_batch_size)]
    response = await client.post("/api/v1/batch", json={"invocations": invocations}, headers=auth_headers)
    body = await response.get_json()
    assert response.status_code == 200
    assert [result["payload"] for result in body["results"]] == [{"i": i} for i in range(len(invocations))]


@pytest.mark.parametrize("body", [{"invocations": []}, {"invocations": {"function_name": ECHO}}, {}])
async def test_an_empty_or_malformed_batch_is_refused(client, auth_headers, echo, body):
    response = await client.post("/api/v1/batch", json=body, headers=auth_headers)
    await _error(response, 400, "InvalidRequest")


async def test_an_allowed_service_token_can_invoke(client, echo, module):
    headers = {"Authorization": f"Bearer {service_token('router_module')}"}
    response = await client.post("/api/v1/invoke", json={"function_name": echo, "payload": [1]}, headers=headers)
    body = await response.get_json()
    assert response.status_code == 200, body
    assert body["payload"] == [1]
    assert (await _records(module))[0]["caller"] == "service:router_module"


async def test_a_service_token_for_a_service_not_allowed_is_refused(client, echo, module):
    headers = {"Authorization": f"Bearer {service_token('other')}"}
    response = await client.post("/api/v1/invoke", json={"function_name": echo}, headers=headers)
    await _error(response, 401, "Unauthenticated")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert await _records(module) == []


async def test_a_service_token_is_still_held_to_the_prefix(client, echo):
    headers = {"Authorization": f"Bearer {service_token('router_module')}"}
    response = await client.post("/api/v1/invoke", json={"function_name": "other-echo"}, headers=headers)
    await _error(response, 403, "Forbidden")


async def test_an_invocation_still_answers_when_its_record_cannot_be_written(client, auth_headers, echo, module):
    await module.database.run(lambda db: db.executesql("DROP TABLE lambda_invocations;"))
    response = await client.post(
        "/api/v1/invoke", json={"function_name": echo, "payload": {"a": 2}}, headers=auth_headers
    )
    body = await response.get_json()
    assert response.status_code == 200, body
    assert body["success"] is True
    assert body["payload"] == {"a": 2}
