"""GET /api/v1/functions and /api/v1/functions/<name>: the prefix guard and a client's patterns."""

from __future__ import annotations

import pytest

from app import Services, build_services, create_app
from services.client_secrets import hash_secret
from tests.conftest import SettingsFactory, issue_token
from tests.records import invocation_rows

PREFIXED = ["waddlebot-alpha", "waddlebot-apple", "waddlebot-beta"]
OUTSIDE = ["other-fn", "waddlebo-near"]
NARROW_SECRET = "narrow-client-secret-0123456789"


@pytest.fixture
def functions(create_function) -> None:
    for name in [*PREFIXED, *OUTSIDE]:
        create_function(name, Description=f"the {name} function", MemorySize=256, Timeout=10)


@pytest.fixture
async def narrow_headers(client, module: Services) -> dict[str, str]:
    """A second client, allowed only functions matching waddlebot-a*."""
    await module.clients.save("narrow-client", hash_secret(NARROW_SECRET), ("waddlebot-a*",))
    token = await issue_token(client, "narrow-client", NARROW_SECRET)
    return {"Authorization": f"Bearer {token}"}


async def _names(client, headers, **query) -> list[str]:
    response = await client.get("/api/v1/functions", headers=headers, query_string=query)
    body = await response.get_json()
    assert response.status_code == 200, body
    assert body["success"] is True
    return [function["function_name"] for function in body["functions"]]


async def test_the_list_holds_only_functions_under_the_prefix(client, auth_headers, functions):
    assert sorted(await _names(client, auth_headers)) == PREFIXED


async def test_the_list_is_narrowed_by_a_clients_patterns(client, narrow_headers, functions):
    assert sorted(await _names(client, narrow_headers)) == ["waddlebot-alpha", "waddlebot-apple"]


@pytest.mark.parametrize("max_items", ["0", "51", "-3", "many"])
async def test_max_items_out_of_range_is_refused(client, auth_headers, functions, max_items):
    response = await client.get("/api/v1/functions", headers=auth_headers, query_string={"max_items": max_items})
    body = await response.get_json()
    assert response.status_code == 400, body
    assert body["success"] is False
    assert body["code"] == "InvalidRequest"
    assert "max_items" in body["error"]


async def test_a_function_configuration_is_shown(client, auth_headers, functions):
    response = await client.get("/api/v1/functions/waddlebot-alpha", headers=auth_headers)
    body = await response.get_json()
    assert response.status_code == 200, body
    function = body["function"]
    assert body["success"] is True
    assert function["function_name"] == "waddlebot-alpha"
    assert function["function_arn"].endswith(":function:waddlebot-alpha")
    assert function["runtime"] == "python3.12"
    assert function["handler"] == "handler.lambda_handler"
    assert function["description"] == "the waddlebot-alpha function"
    assert function["memory_size"] == 256
    assert function["timeout"] == 10
    assert "environment" not in function


async def test_a_function_outside_the_prefix_is_forbidden(client, auth_headers, functions):
    response = await client.get("/api/v1/functions/other-fn", headers=auth_headers)
    body = await response.get_json()
    assert response.status_code == 403, body
    assert body == {"success": False, "error": body["error"], "code": "Forbidden"}


async def test_an_unknown_function_under_the_prefix_is_not_found(client, auth_headers, functions):
    response = await client.get("/api/v1/functions/waddlebot-missing", headers=auth_headers)
    body = await response.get_json()
    assert response.status_code == 404, body
    assert body["code"] == "FunctionNotFound"


async def test_a_bad_qualifier_is_refused(client, auth_headers, functions):
    response = await client.get(
        "/api/v1/functions/waddlebot-alpha", headers=auth_headers, query_string={"qualifier": "not valid!"}
    )
    assert response.status_code == 400
    assert (await response.get_json())["code"] == "InvalidRequest"


async def test_a_client_with_patterns_is_forbidden_functions_outside_them(client, narrow_headers, functions, module):
    shown = await client.get("/api/v1/functions/waddlebot-apple", headers=narrow_headers)
    assert shown.status_code == 200
    hidden = await client.get("/api/v1/functions/waddlebot-beta", headers=narrow_headers)
    assert hidden.status_code == 403
    assert (await hidden.get_json())["code"] == "Forbidden"

    allowed = await client.post(
        "/api/v1/invoke", json={"function_name": "waddlebot-alpha", "payload": {}}, headers=narrow_headers
    )
    assert allowed.status_code == 200
    refused = await client.post("/api/v1/invoke", json={"function_name": "waddlebot-beta"}, headers=narrow_headers)
    assert refused.status_code == 403
    assert (await refused.get_json())["code"] == "Forbidden"
    records = [
        (row["function_name"], row["caller"], row["success"], row["error_code"])
        for row in await invocation_rows(module)
    ]
    assert records == [
        ("waddlebot-alpha", "client:narrow-client", True, None),
        ("waddlebot-beta", "client:narrow-client", False, "Forbidden"),
    ]


async def test_an_empty_prefix_lets_every_function_through(make_settings: SettingsFactory, functions):
    module = await build_services(make_settings(LAMBDA_FUNCTION_PREFIX=""))
    try:
        app = create_app(module)
        async with app.test_app() as test_app:
            client = test_app.test_client()
            headers = {"Authorization": f"Bearer {await issue_token(client)}"}
            assert sorted(await _names(client, headers)) == sorted([*PREFIXED, *OUTSIDE])
            response = await client.post("/api/v1/invoke", json={"function_name": "other-fn"}, headers=headers)
            assert response.status_code == 200
    finally:
        await module.close()
