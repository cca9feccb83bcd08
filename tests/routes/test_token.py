"""POST /api/v1/token through the real app."""

from __future__ import annotations

import time

import jwt
import pytest

from app import Services, build_services, create_app
from tests.conftest import TEST_CLIENT_ID, TEST_CLIENT_SECRET, TEST_SECRET_KEY


async def test_a_token_is_issued_for_good_credentials(client, module: Services):
    before = int(time.time())
    response = await client.post(
        "/api/v1/token", json={"client_id": TEST_CLIENT_ID, "client_secret": TEST_CLIENT_SECRET}
    )
    body = await response.get_json()
    assert response.status_code == 200, body
    assert set(body) == {"token", "expires_in", "token_type"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == module.settings.jwt_expiration_seconds
    claims = jwt.decode(body["token"], TEST_SECRET_KEY, algorithms=["HS256"])
    assert claims["sub"] == TEST_CLIENT_ID
    assert claims["exp"] - claims["iat"] == body["expires_in"]
    assert claims["iat"] >= before

    listed = await client.get("/api/v1/functions", headers={"Authorization": f"Bearer {body['token']}"})
    assert listed.status_code == 200


async def test_the_authorization_scheme_is_case_insensitive(client, auth_headers):
    token = auth_headers["Authorization"].split(" ", 1)[1]
    response = await client.get("/api/v1/functions", headers={"Authorization": f"bearer {token}"})
    assert response.status_code == 200


async def test_wrong_secret_and_unknown_client_get_the_same_401(client):
    wrong_secret = await client.post(
        "/api/v1/token", json={"client_id": TEST_CLIENT_ID, "client_secret": TEST_CLIENT_SECRET + "x"}
    )
    unknown_client = await client.post(
        "/api/v1/token", json={"client_id": "nobody-here", "client_secret": TEST_CLIENT_SECRET}
    )
    assert wrong_secret.status_code == unknown_client.status_code == 401
    first, second = await wrong_secret.get_json(), await unknown_client.get_json()
    assert first == second
    assert first["success"] is False
    assert first["code"] == "Unauthenticated"
    assert wrong_secret.headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_disabled_client_gets_no_token(client, module: Services):
    await module.clients.set_active(TEST_CLIENT_ID, False)
    response = await client.post(
        "/api/v1/token", json={"client_id": TEST_CLIENT_ID, "client_secret": TEST_CLIENT_SECRET}
    )
    assert response.status_code == 401
    assert (await response.get_json())["code"] == "Unauthenticated"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"client_id": TEST_CLIENT_ID},
        {"client_secret": TEST_CLIENT_SECRET},
        {"client_id": "", "client_secret": TEST_CLIENT_SECRET},
        {"client_id": TEST_CLIENT_ID, "client_secret": ""},
        {"client_id": TEST_CLIENT_ID, "client_secret": 12345},
        {"client_id": TEST_CLIENT_ID, "client_secret": TEST_CLIENT_SECRET, "scope": "all"},
        [TEST_CLIENT_ID, TEST_CLIENT_SECRET],
    ],
)
async def test_missing_or_malformed_fields_are_refused_with_400(client, body):
    response = await client.post("/api/v1/token", json=body)
    text = await response.get_data(as_text=True)
    assert response.status_code == 400, text
    reply = await response.get_json()
    assert set(reply) == {"success", "error", "code"}
    assert reply["success"] is False
    assert reply["code"] == "InvalidRequest"
    assert TEST_CLIENT_SECRET not in text


async def test_credentials_sent_as_a_form_are_refused_with_400(client):
    response = await client.post(
        "/api/v1/token", form={"client_id": TEST_CLIENT_ID, "client_secret": TEST_CLIENT_SECRET}
    )
    assert response.status_code == 400
    assert (await response.get_json())["code"] == "InvalidRequest"


async def test_too_many_wrong_secrets_answer_429_with_retry_after(make_settings, aws):
    settings = make_settings(TOKEN_FAILURES_PER_CLIENT="2")
    services = await build_services(settings)
    try:
        async with create_app(services).test_app() as test_app:
            client = test_app.test_client()
            for _ in range(2):
                response = await client.post("/api/v1/token", json={"client_id": TEST_CLIENT_ID, "client_secret": "x"})
                assert response.status_code == 401
            response = await client.post(
                "/api/v1/token", json={"client_id": TEST_CLIENT_ID, "client_secret": TEST_CLIENT_SECRET}
            )
            body = await response.get_json()
            assert response.status_code == 429, body
            assert body["code"] == "TooManyFailedAttempts"
            assert 1 <= int(response.headers["Retry-After"]) <= 60
    finally:
        await services.close()
