"""GET /health: no token, a full report without secrets, and 503 when the database does not answer."""

from __future__ import annotations

import asyncio

import pytest

from app import Services, build_services, create_app
from config import MODULE_NAME, MODULE_VERSION
from models import connect
from tests.conftest import POSTGRES_URL, TEST_CLIENT_SECRET, TEST_SECRET_KEY, SettingsFactory


async def test_health_needs_no_token_and_reports_everything(client, module: Services):
    response = await client.get("/health")
    body = await response.get_json()
    assert response.status_code == 200, body
    assert body["status"] == "healthy"
    assert body["module"] == MODULE_NAME
    assert body["version"] == MODULE_VERSION
    assert body["lambda"]["backend"] == "aws"
    assert body["lambda"]["region"] == "us-east-1"
    assert body["lambda"]["endpoint"].startswith("https://")
    assert body["database"] == {"ok": True, "kind": "sqlite"}
    assert body["in_flight"] == 0
    assert body["config"] == module.settings.summary()
    assert body["config"]["lambda_function_prefix"] == "waddlebot-"


async def test_health_shows_no_secret(client):
    text = await (await client.get("/health")).get_data(as_text=True)
    for secret in (TEST_SECRET_KEY, TEST_CLIENT_SECRET, "kkkkkkkkkkkkkkkk"):
        assert secret not in text
    assert 'secret_key"' not in text
    assert "password" not in text.lower()


async def test_health_answers_503_when_the_database_is_gone(client, module: Services):
    await asyncio.to_thread(module.database.close)
    response = await client.get("/health")
    body = await response.get_json()
    assert response.status_code == 503, body
    assert body["status"] == "unhealthy"
    assert body["database"]["ok"] is False
    assert body["module"] == MODULE_NAME


async def test_a_lost_postgresql_connection_is_replaced_without_a_failed_answer(make_settings: SettingsFactory, aws):
    if not POSTGRES_URL:
        pytest.skip("TEST_DATABASE_URL is not set")
    module = await build_services(make_settings(DATABASE_URL=POSTGRES_URL, DATABASE_POOL_SIZE="1"))
    try:
        app = create_app(module)
        async with app.test_app() as test_app:
            client = test_app.test_client()
            first = await client.get("/health")
            assert first.status_code == 200
            assert (await first.get_json())["database"] == {"ok": True, "kind": "postgresql"}

            # Cut the module's one pooled connection from the server side, as a server restart would.
            pid = (await module.database.run(lambda db: db.executesql("SELECT pg_backend_pid();")))[0][0]
            admin = connect(module.settings.database_url)
            try:
                assert admin.executesql(f"SELECT pg_terminate_backend({int(pid)});")[0][0] is True
                admin.commit()
            finally:
                admin.close()

            # The next call finds the connection dead, opens a new one and answers as if nothing happened.
            after = await client.get("/health")
            assert after.status_code == 200
            assert (await after.get_json())["status"] == "healthy"
            new_pid = (await module.database.run(lambda db: db.executesql("SELECT pg_backend_pid();")))[0][0]
            assert new_pid != pid
    finally:
        await module.close()
