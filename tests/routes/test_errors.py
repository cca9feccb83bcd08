"""Errors through the real app: 401 on every /api/v1 endpoint without a good token, 404 and 405 in JSON."""

from __future__ import annotations

import asyncio
import json
import time

import jwt
import pytest

from app import build_services, create_app
from routes.errors import error_body, http_status_for
from services import errors
from tests.conftest import TEST_CLIENT_ID, TEST_SECRET_KEY, issue_token
from tests.error_classes import domain_errors

ENDPOINTS = [
    ("POST", "/api/v1/invoke", {"function_name": "waddlebot-echo"}),
    ("POST", "/api/v1/invoke-async", {"function_name": "waddlebot-echo"}),
    ("POST", "/api/v1/batch", {"invocations": [{"function_name": "waddlebot-echo"}]}),
    ("GET", "/api/v1/functions", None),
    ("GET", "/api/v1/functions/waddlebot-echo", None),
]


def _expired_token() -> str:
    now = int(time.time())
    return jwt.encode({"sub": TEST_CLIENT_ID, "iat": now - 7200, "exp": now - 3600}, TEST_SECRET_KEY, "HS256")


def _foreign_token() -> str:
    now = int(time.time())
    return jwt.encode({"sub": TEST_CLIENT_ID, "iat": now, "exp": now + 600}, "another-key-" + "x" * 64, "HS256")


AUTHORIZATIONS = {
    "none": (None, "missing bearer token"),
    "empty bearer": ("Bearer ", "missing bearer token"),
    "basic": ("Basic dGVzdC1jbGllbnQ6c2VjcmV0", "missing bearer token"),
    "garbage": ("Bearer not-a-token", "invalid token"),
    "foreign key": ("Bearer {foreign}", "invalid token"),
    "expired": ("Bearer {expired}", "token expired"),
}


async def _send(client, method: str, path: str, body, headers: dict[str, str]):
    if method == "POST":
        return await client.post(path, json=body, headers=headers)
    return await client.get(path, headers=headers)


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
@pytest.mark.parametrize("kind", list(AUTHORIZATIONS))
async def test_every_endpoint_refuses_a_request_without_a_good_token(client, aws, method, path, body, kind):
    template, message = AUTHORIZATIONS[kind]
    headers = {}
    if template is not None:
        headers["Authorization"] = template.format(foreign=_foreign_token(), expired=_expired_token())
    response = await _send(client, method, path, body, headers)
    reply = await response.get_json()
    assert response.status_code == 401, reply
    assert reply["success"] is False
    assert reply["code"] == "Unauthenticated"
    assert message in reply["error"]
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="lambda-action"'


async def test_a_request_without_a_token_is_refused_before_its_body_is_parsed(client):
    response = await client.post("/api/v1/invoke", data="not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 401


async def test_an_unknown_route_answers_404_in_json(client, auth_headers):
    for headers in ({}, auth_headers):
        response = await client.get("/api/v1/nothing-here", headers=headers)
        body = await response.get_json()
        assert response.status_code == 404
        assert set(body) == {"success", "error", "code"}
        assert body["success"] is False
        assert body["code"] == "NotFound"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/api/v1/invoke", "POST"),
        ("DELETE", "/api/v1/batch", "POST"),
        ("PUT", "/api/v1/token", "POST"),
        ("POST", "/health", "GET"),
    ],
)
async def test_a_wrong_method_answers_405_in_json_with_allow(client, auth_headers, method, path, allowed):
    response = await client.open(path, method=method, headers=auth_headers)
    body = await response.get_json()
    assert response.status_code == 405, body
    assert set(body) == {"success", "error", "code"}
    assert body["success"] is False
    assert body["code"] == "MethodNotAllowed"
    methods = {name.strip() for name in response.headers["Allow"].split(",")}
    assert allowed in methods
    assert method not in methods


async def test_a_closed_database_answers_503_not_500(client, auth_headers, module):
    await asyncio.to_thread(module.database.close)
    response = await client.get("/api/v1/functions", headers=auth_headers)
    body = await response.get_json()
    assert response.status_code == 503, body
    assert body["code"] == "DatabaseUnavailable"


class _BrokenLambdaClient:
    """A Lambda client whose every call fails with an error the module has no mapping for."""

    class meta:  # mirrors boto3's client.meta
        endpoint_url = "http://broken.invalid"

    def list_functions(self, **_arguments):
        raise RuntimeError("broken client")


async def test_an_unexpected_error_answers_500_in_json_and_logs_its_traceback(make_settings, caplog):
    module = await build_services(make_settings(), lambda_client=_BrokenLambdaClient())
    try:
        app = create_app(module)
        async with app.test_app() as test_app:
            client = test_app.test_client()
            headers = {"Authorization": f"Bearer {await issue_token(client)}"}
            response = await client.get("/api/v1/functions", headers=headers)
    finally:
        await module.close()
    text = await response.get_data(as_text=True)
    assert response.status_code == 500, text
    assert json.loads(text) == {"success": False, "error": "internal error", "code": "InternalError"}
    assert "Traceback" not in text
    assert "broken client" not in text
    # The Lambda client's surprise is logged once, with its traceback, where it was caught.
    logged = [record for record in caplog.records if record.exc_info is not None]
    assert len(logged) == 1
    assert logged[0].name == "services.lambda_client"
    assert logged[0].exc_info is not None
    assert logged[0].exc_info[0] is RuntimeError


@pytest.mark.parametrize("error_class", domain_errors(), ids=lambda cls: cls.__name__)
def test_every_domain_error_has_a_status_that_is_not_500_unless_internal(error_class: type[errors.ServiceError]):
    error = error_class("something went wrong")

    status = http_status_for(error)

    assert (status == 500) is (error_class is errors.InternalError)
    assert 400 <= status < 600
    assert error_body(error) == {"success": False, "error": "something went wrong", "code": error_class.__name__}


def test_a_subclass_takes_the_status_of_its_nearest_mapped_base():
    class AliasNotFound(errors.FunctionNotFound):
        pass

    assert http_status_for(AliasNotFound("x")) == 404
    assert http_status_for(errors.JournalFull("x")) == 503
    assert http_status_for(errors.ConcurrencyLimitReached("x")) == 429
    assert http_status_for(errors.ServiceError("x")) == 500
