"""GET /metrics through the real app: exact figures after a known set of calls against the fake Lambda."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app import Services, build_services, create_app
from tests.conftest import issue_token, service_token
from tests.fake_lambda import FakeLambda, Reply
from tests.metrics_text import sample_value
from tests.records import invocation_rows

ECHO = "waddlebot-echo"
FAILS = "waddlebot-fails"


def _fail(event: object) -> object:
    raise ValueError("no")


@pytest.fixture
async def served(make_settings, aws: FakeLambda) -> AsyncIterator[tuple[Services, object]]:
    aws.add_function(ECHO)
    aws.add_function(FAILS, handler=_fail)
    aws.add_function("billing-export")
    module = await build_services(make_settings(MAX_RETRIES="1", METRICS_TOKEN="scrape-me-please"))
    app = create_app(module)
    async with app.test_app() as test_app:
        yield module, test_app.test_client()
    await module.close()


async def _scrape(client) -> str:
    response = await client.get("/metrics", headers={"Authorization": "Bearer scrape-me-please"})
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    return await response.get_data(as_text=True)


async def test_invocations_are_counted_by_outcome_with_their_durations(served, aws: FakeLambda):
    module, client = served
    headers = {"Authorization": f"Bearer {await issue_token(client)}"}
    for payload in ({"n": 1}, {"n": 2}):
        await client.post("/api/v1/invoke", json={"function_name": ECHO, "payload": payload}, headers=headers)
    await client.post("/api/v1/invoke", json={"function_name": FAILS}, headers=headers)
    await client.post("/api/v1/invoke", json={"function_name": "billing-export"}, headers=headers)
    # Throttled once, then answered: one retry. Then throttled twice: refused after MAX_RETRIES=1.
    aws.functions[ECHO].script(Reply.throttle())
    await client.post("/api/v1/invoke-async", json={"function_name": ECHO}, headers=headers)
    aws.functions[ECHO].script(Reply.throttle(), Reply.throttle())
    throttled = await client.post("/api/v1/invoke", json={"function_name": ECHO}, headers=headers)
    assert throttled.status_code == 429
    await client.post("/api/v1/token", json={"client_id": "test-client", "client_secret": "wrong-secret"})
    await client.get("/api/v1/functions", headers={"Authorization": "Bearer not-a-token"})

    text = await _scrape(client)

    def count(function_name: str, invocation_type: str, outcome: str) -> float | None:
        return sample_value(
            text,
            "lambda_action_invocations_total",
            function_name=function_name,
            invocation_type=invocation_type,
            transport="rest",
            outcome=outcome,
        )

    assert count(ECHO, "RequestResponse", "success") == 2
    assert count(FAILS, "RequestResponse", "function_error") == 1
    assert count("billing-export", "RequestResponse", "Forbidden") == 1
    assert count(ECHO, "Event", "success") == 1
    assert count(ECHO, "RequestResponse", "Throttled") == 1
    assert sample_value(text, "lambda_action_lambda_retries_total", reason="TooManyRequestsException") == 2
    assert sample_value(text, "lambda_action_refused_total", code="Forbidden") == 1
    assert sample_value(text, "lambda_action_refused_total", code="Throttled") == 1
    assert sample_value(text, "lambda_action_auth_failures_total", reason="bad credentials") == 1
    assert sample_value(text, "lambda_action_auth_failures_total", reason="invalid token") == 1
    # Durations only of what Lambda answered: the two echoes and the function error of RequestResponse.
    answered = sample_value(
        text, "lambda_action_invocation_duration_seconds_count", function_name=ECHO, invocation_type="RequestResponse"
    )
    assert answered == 2
    assert sample_value(text, "lambda_action_invocations_in_flight") == 0
    assert len(await invocation_rows(module)) == 6


async def test_the_journal_gauges_follow_its_state(served):
    module, client = served
    module.metrics.sample_journal(module.invocation_log.state())

    text = await _scrape(client)

    assert sample_value(text, "lambda_action_database_up") == 1
    assert sample_value(text, "lambda_action_journal_full") == 0
    assert sample_value(text, "lambda_action_journal_unshipped_bytes") is not None
    assert sample_value(text, "lambda_action_journal_lag_seconds") is not None


async def test_with_metrics_token_set_a_scrape_needs_it(served):
    _, client = served

    anonymous = await client.get("/metrics")
    wrong = await client.get("/metrics", headers={"Authorization": "Bearer guess"})
    router = await client.get("/metrics", headers={"Authorization": f"Bearer {service_token()}"})

    assert (anonymous.status_code, wrong.status_code, router.status_code) == (401, 401, 401)
    assert (await anonymous.get_json())["code"] == "Unauthenticated"


async def test_without_metrics_token_metrics_are_open(client):
    response = await client.get("/metrics")

    assert response.status_code == 200
    assert "lambda_action_invocations_in_flight" in await response.get_data(as_text=True)
