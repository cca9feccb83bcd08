"""GET /health: no token, a full report without secrets; the database away is degraded, a full journal 503."""

from __future__ import annotations

import asyncio

import pytest

from app import Services, build_services, create_app
from config import MODULE_NAME, MODULE_VERSION
from models import connect
from services.invocation_log import InvocationStart, utc_now
from tests.conftest import POSTGRES_URL, TEST_CLIENT_SECRET, TEST_SECRET_KEY, SettingsFactory, issue_token


async def test_health_needs_no_token_and_reports_everything(client, module: Services, aws):
    response = await client.get("/health")
    body = await response.get_json()
    assert response.status_code == 200, body
    assert body["status"] == "healthy"
    assert body["module"] == MODULE_NAME
    assert body["version"] == MODULE_VERSION
    assert body["lambda"]["backend"] == "aws"
    assert body["lambda"]["region"] == "us-east-1"
    # Where the module's boto3 client sends its calls: here, the fake Lambda.
    assert body["lambda"]["endpoint"] == aws.url
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


async def test_the_database_gone_is_degraded_not_a_failed_liveness(
    client, module: Services, auth_headers, create_function
):
    create_function("waddlebot-echo")
    # The caller's client is known (checked recently) before the database goes.
    assert (await client.get("/api/v1/functions", headers=auth_headers)).status_code == 200
    await asyncio.to_thread(module.database.close)
    # An invocation still runs: its record waits in the journal.
    invoked = await client.post("/api/v1/invoke", json={"function_name": "waddlebot-echo"}, headers=auth_headers)
    assert invoked.status_code == 200

    # The shipper finds the database gone at its next attempt (it tries within a fraction of a second).
    for _ in range(50):
        response = await client.get("/health")
        body = await response.get_json()
        if not body["journal"]["database_takes_records"]:
            break
        await asyncio.sleep(0.1)
    assert response.status_code == 200, body
    assert body["status"] == "degraded"
    assert body["database"]["ok"] is False
    assert body["journal"]["database_takes_records"] is False
    assert body["journal"]["unshipped_bytes"] > 0
    assert body["journal"]["full"] is False
    assert body["module"] == MODULE_NAME


async def test_a_full_journal_is_unhealthy_and_refuses_invocations_but_the_process_is_alive(
    make_settings: SettingsFactory, aws
):
    module = await build_services(make_settings(LOG_SPOOL_MAX_BYTES=str(1024 * 1024)))
    try:
        app = create_app(module)
        async with app.test_app() as test_app:
            client = test_app.test_client()
            headers = {"Authorization": f"Bearer {await issue_token(client)}"}
            assert (await client.get("/api/v1/functions", headers=headers)).status_code == 200
            # The database goes away, and records pile up in the journal until it is full.
            await asyncio.to_thread(module.database.close)
            for number in range(3):
                module.invocation_log.record_start(
                    InvocationStart(
                        invocation_id=f"filler-{number}",
                        function_name="waddlebot-echo",
                        invocation_type="Event",
                        payload="x" * 400_000,
                        alias=None,
                        version=None,
                        caller="client:test-client",
                        transport="rest",
                        invoked_at=utc_now(),
                    )
                )

            health = await client.get("/health")
            body = await health.get_json()
            assert health.status_code == 503, body
            assert body["status"] == "unhealthy"
            assert body["journal"]["full"] is True
            assert body["journal"]["max_bytes"] == 1024 * 1024
            # Liveness does not fail for it: a restart would not bring the database back nor empty the journal.
            live = await client.get("/health/live")
            assert live.status_code == 200
            assert (await live.get_json())["status"] == "alive"

            refused = await client.post("/api/v1/invoke", json={"function_name": "waddlebot-echo"}, headers=headers)
            reply = await refused.get_json()
            assert refused.status_code == 503, reply
            assert reply["code"] == "JournalFull"
            assert "LOG_SPOOL_MAX_BYTES" in reply["error"]
    finally:
        await module.close()


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
