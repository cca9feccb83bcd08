"""GET /api/v1/invocations, /api/v1/invocations/<id> and /api/v1/stats through the real app, after real invocations
against the fake Lambda."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest

from app import Services
from tests.conftest import service_token
from tests.records import invocation_rows
from tests.served_module import served_module

ECHO = "waddlebot-echo"
FAILS = "waddlebot-fails"


def _fail(event: object) -> object:
    raise ValueError("cannot handle it")


@pytest.fixture
def functions(aws) -> None:
    aws.add_function(ECHO)
    aws.add_function(FAILS, handler=_fail)


def _router_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {service_token()}"}


async def _invoke(client, headers: dict[str, str], function_name: str, payload: object) -> str:
    response = await client.post(
        "/api/v1/invoke", json={"function_name": function_name, "payload": payload}, headers=headers
    )
    return (await response.get_json())["invocation_id"]


@pytest.fixture
async def invoked(client, auth_headers, functions, module: Services) -> dict[str, str]:
    """Three invocations of the test client (an echo, a failure, an echo) and one of the router, all shipped."""
    ids = {
        "first": await _invoke(client, auth_headers, ECHO, {"n": 1}),
        "failed": await _invoke(client, auth_headers, FAILS, {"n": 2}),
        "last": await _invoke(client, auth_headers, ECHO, {"n": 3}),
        "router": await _invoke(client, _router_headers(), ECHO, {"n": 4}),
    }
    await invocation_rows(module)
    return ids


async def _ok(response) -> dict:
    text = await response.get_data(as_text=True)
    assert response.status_code == 200, text
    return json.loads(text)


async def test_a_client_lists_its_own_invocations_newest_first(client, auth_headers, invoked):
    body = await _ok(await client.get("/api/v1/invocations", headers=auth_headers))

    listed = body["invocations"]
    assert {item["invocation_id"] for item in listed} == {invoked["first"], invoked["failed"], invoked["last"]}
    assert [item["invoked_at"] for item in listed] == sorted((item["invoked_at"] for item in listed), reverse=True)
    assert all(item["caller"] == "client:test-client" and item["invoked_at"].endswith("Z") for item in listed)
    assert all(len(item["x_request_id"]) == 32 for item in listed)
    assert "payload" not in listed[0]
    assert body["next_cursor"] is None


async def test_the_router_sees_every_invocation(client, invoked):
    body = await _ok(await client.get("/api/v1/invocations", headers=_router_headers()))

    assert {item["invocation_id"] for item in body["invocations"]} == set(invoked.values())


async def test_filters_and_pages(client, auth_headers, invoked):
    failed = await _ok(await client.get("/api/v1/invocations?success=false", headers=auth_headers))
    echo = await _ok(await client.get(f"/api/v1/invocations?function_name={ECHO}&limit=1", headers=auth_headers))
    rest = await _ok(
        await client.get(
            f"/api/v1/invocations?function_name={ECHO}&limit=1&cursor={echo['next_cursor']}", headers=auth_headers
        )
    )
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    none = await _ok(await client.get("/api/v1/invocations", query_string={"since": later}, headers=auth_headers))

    assert [item["invocation_id"] for item in failed["invocations"]] == [invoked["failed"]]
    assert failed["invocations"][0]["function_error"] == "Unhandled"
    assert len(echo["invocations"]) == len(rest["invocations"]) == 1
    assert {echo["invocations"][0]["invocation_id"], rest["invocations"][0]["invocation_id"]} == {
        invoked["first"],
        invoked["last"],
    }
    assert none["invocations"] == []


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("limit=0", 400, "InvalidRequest"),
        ("limit=201", 400, "InvalidRequest"),
        ("since=yesterday", 400, "InvalidRequest"),
        ("since=2026-12-01T10:00:00", 400, "InvalidRequest"),
        ("transport=smtp", 400, "InvalidRequest"),
        ("cursor=bogus", 404, "PageNotFound"),
    ],
)
async def test_a_bad_query_says_what_to_fix(client, auth_headers, query: str, status: int, code: str):
    response = await client.get(f"/api/v1/invocations?{query}", headers=auth_headers)

    body = await response.get_json()
    assert response.status_code == status, body
    assert body["code"] == code


async def test_one_invocation_with_payloads_log_tail_and_log_location(client, auth_headers, invoked):
    body = await _ok(await client.get(f"/api/v1/invocations/{invoked['failed']}", headers=auth_headers))

    invocation = body["invocation"]
    assert invocation["payload"] == {"n": 2}
    assert invocation["response_payload"]["errorMessage"] == "cannot handle it"
    assert "START RequestId:" in invocation["log_tail"]
    assert invocation["logs"]["log_group"] == f"/aws/lambda/{FAILS}"
    assert invocation["request_id"] in invocation["logs"]["insights_query"]


async def test_another_callers_invocation_is_404_like_a_missing_one(client, auth_headers, invoked):
    others = await client.get(f"/api/v1/invocations/{invoked['router']}", headers=auth_headers)
    missing = await client.get(f"/api/v1/invocations/{'0' * 32}", headers=auth_headers)
    malformed = await client.get("/api/v1/invocations/not-an-id", headers=auth_headers)

    assert (others.status_code, missing.status_code, malformed.status_code) == (404, 404, 400)
    assert (await others.get_json())["code"] == (await missing.get_json())["code"] == "InvocationNotFound"


async def test_stats_count_the_callers_invocations(client, auth_headers, invoked):
    body = await _ok(await client.get("/api/v1/stats", headers=auth_headers))
    one = await _ok(await client.get(f"/api/v1/stats?function_name={FAILS}", headers=auth_headers))

    by_name = {item["function_name"]: item for item in body["functions"]}
    assert (by_name[ECHO]["count"], by_name[ECHO]["successes"], by_name[ECHO]["success_rate"]) == (2, 2, 1.0)
    assert (by_name[FAILS]["count"], by_name[FAILS]["function_errors"]) == (1, 1)
    assert by_name[ECHO]["p50_ms"] > 0
    assert (body["totals"]["count"], body["totals"]["successes"]) == (3, 2)
    assert [item["function_name"] for item in one["functions"]] == [FAILS]


async def test_the_history_needs_a_token(client):
    for path in ("/api/v1/invocations", f"/api/v1/invocations/{'0' * 32}", "/api/v1/stats"):
        response = await client.get(path)
        assert response.status_code == 401, path


def test_on_the_embedded_runtime_an_invocations_log_lines_come_from_the_runtime(tmp_path):
    functions = tmp_path / "functions"
    (functions / "waddlebot-talks").mkdir(parents=True)
    (functions / "waddlebot-talks" / "handler.py").write_text(
        "def lambda_handler(event, context):\n    print('talking about', event['topic'])\n    return 'ok'\n"
    )
    (functions / "waddlebot-talks" / "function.json").write_text('{"handler": "handler.lambda_handler"}')
    with served_module(
        tmp_path,
        MODULE_SECRET_KEY="h" * 64,
        BOOTSTRAP_CLIENT_ID="history-client",
        BOOTSTRAP_CLIENT_SECRET="history-client-secret-0123",
        LOCAL_FUNCTIONS_DIR=str(functions),
    ) as base:
        token = _post(
            f"{base}/api/v1/token", {"client_id": "history-client", "client_secret": "history-client-secret-0123"}
        )
        headers = {"Authorization": f"Bearer {token['token']}"}
        queued = _post(
            f"{base}/api/v1/invoke-async", {"function_name": "waddlebot-talks", "payload": {"topic": "geese"}}, headers
        )

        deadline = time.monotonic() + 15
        while True:
            logs = _get(f"{base}/api/v1/invocations/{queued['invocation_id']}", headers)["invocation"]["logs"]
            if logs["lines"] and any("talking about geese" in line for line in logs["lines"]):
                break
            assert time.monotonic() < deadline, logs
            time.sleep(0.2)

    assert logs["log_group"] == "/aws/lambda/waddlebot-talks"
    assert logs["lines"][0].startswith("START RequestId: ")
    assert logs["insights_query"] is None


def _post(url: str, body: dict, headers: dict[str, str] | None = None) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json", **(headers or {})}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _get(url: str, headers: dict[str, str]) -> dict:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        if error.code != 404:
            raise
        # Not recorded yet (a record reaches the history within a second): as good as no lines.
        return {"invocation": {"logs": {"lines": None}}}
