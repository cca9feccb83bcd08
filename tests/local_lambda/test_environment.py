"""What a handler's process sees, through real boto3: Lambda's variables, not the host's credentials."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from local_lambda import LocalLambdaRuntime
from tests.local_lambda.conftest import FunctionMaker

REPORTER = """
import os

def lambda_handler(event, context):
    context.log("said through context.log\\n")
    names = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_LAMBDA_RUNTIME_API",
             "_X_AMZN_TRACE_ID", "AWS_LAMBDA_INITIALIZATION_TYPE", "LANG", "PATH", "AWS_ENDPOINT_URL_DYNAMODB"]
    return {"environment": {name: os.environ.get(name) for name in names}, "tenant_id": context.tenant_id}
"""


@pytest.fixture
def host_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAHOSTKEYTHATMUSTNOTLEAK")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "host-secret-that-must-not-leak")
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:8000")


def _report(lambda_client: Any, **options: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    response = lambda_client.invoke(FunctionName="reporter", LogType="Tail", **options)
    return json.loads(response["Payload"].read()), response


def test_the_handler_sees_lambdas_variables_and_not_the_hosts_credentials(
    host_credentials: None, make_function: FunctionMaker, runtime: LocalLambdaRuntime, lambda_client: Any
):
    make_function("reporter", REPORTER)

    answer, response = _report(lambda_client)

    environment = answer["environment"]
    assert environment["AWS_ACCESS_KEY_ID"] == "local-function"
    assert "host-secret" not in json.dumps(answer)
    assert environment["AWS_SESSION_TOKEN"] == "local-function"
    assert environment["AWS_LAMBDA_RUNTIME_API"] == runtime.endpoint_url.removeprefix("http://")
    assert environment["AWS_LAMBDA_INITIALIZATION_TYPE"] == "on-demand"
    assert environment["LANG"] == "en_US.UTF-8"
    assert environment["PATH"].startswith("/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin")
    assert environment["AWS_ENDPOINT_URL_DYNAMODB"] == "http://127.0.0.1:8000"
    assert environment["_X_AMZN_TRACE_ID"].startswith("Root=1-")
    assert answer["tenant_id"] is None
    assert "said through context.log" in base64.b64decode(response["LogResult"]).decode()


def test_the_callers_trace_reaches_the_handler(make_function: FunctionMaker, lambda_client: Any):
    make_function("reporter", REPORTER)
    trace = "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1"

    def add_trace(request: Any, **_: Any) -> None:
        request.headers["X-Amzn-Trace-Id"] = trace

    lambda_client.meta.events.register("before-sign.lambda.Invoke", add_trace)
    first, _ = _report(lambda_client)
    lambda_client.meta.events.unregister("before-sign.lambda.Invoke", add_trace)
    second, _ = _report(lambda_client)

    assert first["environment"]["_X_AMZN_TRACE_ID"] == trace
    assert second["environment"]["_X_AMZN_TRACE_ID"] not in ("", trace)


def test_credentials_the_manifest_gives_are_the_functions(make_function: FunctionMaker, lambda_client: Any):
    make_function("reporter", REPORTER, environment={"AWS_ACCESS_KEY_ID": "from-the-manifest"})

    answer, _ = _report(lambda_client)

    assert answer["environment"]["AWS_ACCESS_KEY_ID"] == "from-the-manifest"
