"""ListFunctions and GetFunctionConfiguration through boto3."""

from __future__ import annotations

import base64
import logging
import re
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.local_lambda.conftest import FunctionMaker

HANDLER = "def lambda_handler(event, context):\n    return event\n"
ARN_PREFIX = "arn:aws:lambda:us-east-1:000000000000:function:"
LAST_MODIFIED = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}\+0000")


def test_list_functions_pages_sorted_by_name(
    functions_dir: Path, make_function: FunctionMaker, lambda_client: Any
) -> None:
    names = [f"waddlebot-fn-{number:02d}" for number in range(60)]
    for name in reversed(names):
        make_function(name, HANDLER)
    (functions_dir / "not-a-function").mkdir()  # no manifest: not listed

    first = lambda_client.list_functions()
    second = lambda_client.list_functions(Marker=first["NextMarker"])

    assert [f["FunctionName"] for f in first["Functions"]] == names[:50]
    assert [f["FunctionName"] for f in second["Functions"]] == names[50:]
    assert "NextMarker" not in second
    small_pages = lambda_client.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 7})
    page_sizes = []
    listed = []
    for page in small_pages:
        page_sizes.append(len(page["Functions"]))
        listed += [f["FunctionName"] for f in page["Functions"]]
    assert listed == names
    assert page_sizes == [7] * 8 + [4]


def test_list_functions_with_all_versions(make_function: FunctionMaker, lambda_client: Any) -> None:
    directory = make_function("versioned", HANDLER, versions={"1": {}, "2": {}})
    for number in ("1", "2"):
        (directory / "versions" / number).mkdir(parents=True)
        (directory / "versions" / number / "handler.py").write_text(HANDLER)
    make_function("plain", HANDLER)

    pages = lambda_client.get_paginator("list_functions").paginate(
        FunctionVersion="ALL", PaginationConfig={"PageSize": 2}
    )
    listed = [(f["FunctionName"], f["Version"], f["FunctionArn"]) for page in pages for f in page["Functions"]]

    assert listed == [
        ("plain", "$LATEST", f"{ARN_PREFIX}plain"),
        ("versioned", "$LATEST", f"{ARN_PREFIX}versioned"),
        ("versioned", "1", f"{ARN_PREFIX}versioned:1"),
        ("versioned", "2", f"{ARN_PREFIX}versioned:2"),
    ]


@pytest.mark.parametrize(
    "marker", ["not-a-marker", base64.urlsafe_b64encode(b"[" * 10_000 + b"]" * 10_000).decode()], ids=["text", "deep"]
)
def test_list_functions_refuses_bad_markers(lambda_client: Any, marker: str) -> None:
    with pytest.raises(lambda_client.exceptions.InvalidParameterValueException, match="marker"):
        lambda_client.list_functions(Marker=marker)


def test_function_configuration_has_lambdas_fields(make_function: FunctionMaker, lambda_client: Any) -> None:
    directory = make_function(
        "configured",
        HANDLER,
        handler="handler.lambda_handler",
        runtime="python3.11",
        timeout=7,
        memory_size=256,
        description="A test function",
        environment={"GREETING": "hello"},
    )

    configuration = lambda_client.get_function_configuration(FunctionName="configured")

    assert configuration["FunctionName"] == "configured"
    assert configuration["FunctionArn"] == f"{ARN_PREFIX}configured"
    assert configuration["Runtime"] == "python3.11"
    assert configuration["Role"].startswith("arn:aws:iam::000000000000:role/")
    assert configuration["Handler"] == "handler.lambda_handler"
    assert configuration["CodeSize"] == len(HANDLER)  # the code, not the manifest
    assert len(base64.b64decode(configuration["CodeSha256"], validate=True)) == 32
    assert configuration["Description"] == "A test function"
    assert configuration["Timeout"] == 7
    assert configuration["MemorySize"] == 256
    assert LAST_MODIFIED.fullmatch(configuration["LastModified"])
    assert configuration["Version"] == "$LATEST"
    assert configuration["Environment"] == {"Variables": {"GREETING": "hello"}}
    assert configuration["State"] == "Active"
    assert configuration["PackageType"] == "Zip"
    # The same as ListFunctions reports.
    listed = lambda_client.list_functions()["Functions"][0]
    assert {key: listed[key] for key in ("CodeSha256", "CodeSize", "Version", "FunctionArn")} == {
        key: configuration[key] for key in ("CodeSha256", "CodeSize", "Version", "FunctionArn")
    }

    (directory / "handler.py").write_text(HANDLER + "# edited\n")
    edited = lambda_client.get_function_configuration(FunctionName="configured")
    assert edited["CodeSha256"] != configuration["CodeSha256"]
    assert edited["CodeSize"] == len(HANDLER) + len("# edited\n")


def test_function_configuration_by_qualifier(make_function: FunctionMaker, lambda_client: Any) -> None:
    directory = make_function(
        "released",
        HANDLER + "# latest\n",
        timeout=5,
        versions={"1": {"code": "versions/1", "timeout": 3, "last_modified": "2026-01-02T03:04:05.678+0000"}},
        aliases={"live": "1"},
    )
    (directory / "versions" / "1").mkdir(parents=True)
    (directory / "versions" / "1" / "handler.py").write_text(HANDLER)

    latest = lambda_client.get_function_configuration(FunctionName="released", Qualifier="$LATEST")
    version = lambda_client.get_function_configuration(FunctionName="released", Qualifier="1")
    alias = lambda_client.get_function_configuration(FunctionName="released", Qualifier="live")
    by_name = lambda_client.get_function_configuration(FunctionName="released:live")

    assert (latest["Version"], latest["Timeout"]) == ("$LATEST", 5)
    assert latest["FunctionArn"] == f"{ARN_PREFIX}released:$LATEST"
    assert (version["Version"], version["FunctionArn"], version["Timeout"]) == ("1", f"{ARN_PREFIX}released:1", 3)
    assert version["LastModified"] == "2026-01-02T03:04:05.678+0000"
    assert version["CodeSize"] == len(HANDLER)
    assert latest["CodeSize"] == len(HANDLER + "# latest\n")  # without the versions folder
    assert version["CodeSha256"] != latest["CodeSha256"]
    assert (alias["Version"], alias["FunctionArn"]) == ("1", f"{ARN_PREFIX}released:live")
    assert by_name == {**alias, "ResponseMetadata": by_name["ResponseMetadata"]}
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException, match="released:9"):
        lambda_client.get_function_configuration(FunctionName="released", Qualifier="9")


@pytest.mark.parametrize(
    ("manifest", "complaint"),
    [
        ('{"timeout": "soon"}', "'timeout' must be a whole number"),
        ('{"aliases": {"live": ["1"]}}', "alias 'live' points at ['1']"),
        ('{"aliases": {"live": {"version": "1"}}}', "alias 'live' points at '1', which is not a version"),
        ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
    ],
)
def test_a_broken_manifest_is_reported_and_skipped(
    functions_dir: Path, make_function: FunctionMaker, lambda_client: Any, manifest: str, complaint: str
) -> None:
    make_function("good", HANDLER)
    broken = make_function("broken", HANDLER)
    (broken / "function.json").write_text(manifest)

    assert [f["FunctionName"] for f in lambda_client.list_functions()["Functions"]] == ["good"]
    # A 4xx, which boto3 does not retry: the answer comes at once, with what to fix.
    with pytest.raises(lambda_client.exceptions.ResourceConflictException) as error:
        lambda_client.invoke(FunctionName="broken")
    assert complaint in error.value.response["Error"]["Message"]
    assert "broken/function.json" in error.value.response["Error"]["Message"]
    assert lambda_client.invoke(FunctionName="good", Payload=b'"still here"')["Payload"].read() == b'"still here"'


def test_a_function_linking_outside_the_functions_folder_is_refused(
    functions_dir: Path, make_function: FunctionMaker, lambda_client: Any
) -> None:
    make_function("good", HANDLER)
    outside = functions_dir.parent / "outside"
    outside.mkdir()
    (outside / "secret.py").write_text("SECRET = 'from outside'\n")
    linked = make_function("linked", "from secret import SECRET\n\ndef lambda_handler(event, context):\n    return 1\n")
    (linked / "secret.py").symlink_to(outside / "secret.py")

    assert [f["FunctionName"] for f in lambda_client.list_functions()["Functions"]] == ["good"]
    with pytest.raises(lambda_client.exceptions.ResourceConflictException, match="outside the functions folder"):
        lambda_client.invoke(FunctionName="linked")
    with pytest.raises(lambda_client.exceptions.ResourceConflictException, match="outside the functions folder"):
        lambda_client.get_function_configuration(FunctionName="linked")


def test_a_broken_manifest_is_answered_at_once_not_retried(
    make_function: FunctionMaker, lambda_client: Any, runtime: Any
) -> None:
    broken = make_function("broken", HANDLER)
    (broken / "function.json").write_text("{not json")
    retrying = boto3.client(
        "lambda",
        endpoint_url=runtime.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(retries={"mode": "standard", "max_attempts": 5}),
    )

    with pytest.raises(retrying.exceptions.ResourceConflictException) as error:
        retrying.invoke(FunctionName="broken")

    assert error.value.response["ResponseMetadata"]["RetryAttempts"] == 0
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409


def test_a_folder_with_only_its_handler_is_a_function_with_the_defaults(
    functions_dir: Path, lambda_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="local_lambda")
    (functions_dir / "bare").mkdir()
    (functions_dir / "bare" / "handler.py").write_text("def lambda_handler(event, context):\n    return 'bare'\n")
    (functions_dir / "notes").mkdir()
    (functions_dir / "notes" / "README.txt").write_text("not code\n")

    names = [f["FunctionName"] for f in lambda_client.list_functions()["Functions"]]
    configuration = lambda_client.get_function_configuration(FunctionName="bare")
    answer = lambda_client.invoke(FunctionName="bare")["Payload"].read()

    assert names == ["bare"]
    assert (configuration["Handler"], configuration["Timeout"], configuration["MemorySize"]) == (
        "handler.lambda_handler",
        3,
        128,
    )
    assert answer == b'"bare"'
    said = [record.getMessage() for record in caplog.records if "is not a function" in record.getMessage()]
    assert len(said) == 1, said
    assert said[0].endswith(
        "notes is not a function: it holds neither function.json nor handler.py nor handler/__init__.py"
    )


def test_get_function_reports_configuration_code_and_reservation(
    make_function: FunctionMaker, lambda_client: Any
) -> None:
    shared = make_function("shared", HANDLER)
    make_function("reserved", HANDLER, concurrency=3)

    function = lambda_client.get_function(FunctionName="shared")
    reserved = lambda_client.get_function(FunctionName=f"{ARN_PREFIX}reserved")
    configuration = lambda_client.get_function_configuration(FunctionName="shared")

    assert function["Configuration"] == {key: configuration[key] for key in function["Configuration"]}
    assert function["Configuration"]["FunctionArn"] == f"{ARN_PREFIX}shared"
    assert function["Code"] == {"RepositoryType": "Local", "Location": shared.resolve().as_uri()}
    assert "Concurrency" not in function  # unreserved, as Lambda omits it
    assert reserved["Concurrency"] == {"ReservedConcurrentExecutions": 3}
    assert lambda_client.get_function_concurrency(FunctionName="reserved")["ReservedConcurrentExecutions"] == 3
    assert "ReservedConcurrentExecutions" not in lambda_client.get_function_concurrency(FunctionName="shared")
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException, match="function:absent"):
        lambda_client.get_function(FunctionName="absent")
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException, match="shared:live"):
        lambda_client.get_function(FunctionName="shared", Qualifier="live")


def test_logging_config_is_rendered_as_lambda_reports_it(make_function: FunctionMaker, lambda_client: Any) -> None:
    make_function("plain-text", HANDLER)
    make_function("structured", HANDLER, logging_config={"log_format": "JSON", "application_log_level": "DEBUG"})
    make_function("quiet", HANDLER, logging_config={"log_format": "JSON", "system_log_level": "WARN"})

    plain = lambda_client.get_function_configuration(FunctionName="plain-text")["LoggingConfig"]
    structured = lambda_client.get_function(FunctionName="structured")["Configuration"]["LoggingConfig"]
    quiet = lambda_client.list_functions()["Functions"][1]  # plain-text, quiet, structured

    assert plain == {"LogFormat": "Text", "LogGroup": "/aws/lambda/plain-text"}
    assert structured == {
        "LogFormat": "JSON",
        "ApplicationLogLevel": "DEBUG",
        "SystemLogLevel": "INFO",
        "LogGroup": "/aws/lambda/structured",
    }
    assert quiet["FunctionName"] == "quiet"
    assert quiet["LoggingConfig"] == {
        "LogFormat": "JSON",
        "ApplicationLogLevel": "INFO",
        "SystemLogLevel": "WARN",
        "LogGroup": "/aws/lambda/quiet",
    }


def test_a_folder_holding_a_handler_package_is_a_function_with_the_defaults(
    functions_dir: Path, lambda_client: Any
) -> None:
    package = functions_dir / "packaged" / "handler"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("from handler.answer import lambda_handler\n")
    (package / "answer.py").write_text("def lambda_handler(event, context):\n    return {'from': __name__}\n")
    (functions_dir / "empty-package" / "handler").mkdir(parents=True)  # no __init__.py: not a function

    listed = [f["FunctionName"] for f in lambda_client.list_functions()["Functions"]]
    configuration = lambda_client.get_function_configuration(FunctionName="packaged")
    answer = lambda_client.invoke(FunctionName="packaged")["Payload"].read()

    assert listed == ["packaged"]
    assert (configuration["Handler"], configuration["Timeout"], configuration["MemorySize"]) == (
        "handler.lambda_handler",
        3,
        128,
    )
    assert answer == b'{"from": "handler.answer"}'
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException):
        lambda_client.get_function_configuration(FunctionName="empty-package")
