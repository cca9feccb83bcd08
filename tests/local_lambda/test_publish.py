"""PublishVersion and ListVersionsByFunction through boto3: versions are files in the function's folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.local_lambda.conftest import FunctionMaker, invoke_json

ARN_PREFIX = "arn:aws:lambda:us-east-1:000000000000:function:"
ANSWER = "ANSWER = {answer!r}\n\ndef lambda_handler(event, context):\n    return ANSWER\n"


def test_publish_version_copies_the_code_and_records_it_in_the_manifest(
    make_function: FunctionMaker, lambda_client: Any
) -> None:
    directory = make_function("released", ANSWER.format(answer="first"), description="Says first", timeout=5)
    latest = lambda_client.get_function_configuration(FunctionName="released")

    published = lambda_client.publish_version(FunctionName="released")

    assert published["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert (published["Version"], published["FunctionArn"]) == ("1", f"{ARN_PREFIX}released:1")
    assert (published["CodeSha256"], published["CodeSize"]) == (latest["CodeSha256"], latest["CodeSize"])
    assert (published["Description"], published["Timeout"]) == ("Says first", 5)
    # The version is files a diff shows: a copy of the code, and an entry in the manifest.
    assert (directory / "versions" / "1" / "handler.py").read_text() == ANSWER.format(answer="first")
    entry = json.loads((directory / "function.json").read_text())["versions"]["1"]
    assert (entry["code"], entry["code_sha256"], entry["timeout"]) == ("versions/1", latest["CodeSha256"], 5)
    assert not [path.name for path in directory.rglob(".*")]  # no staging file left behind

    (directory / "handler.py").write_text(ANSWER.format(answer="second"))
    assert invoke_json(lambda_client, "released", Qualifier="1")[1] == "first"
    assert invoke_json(lambda_client, "released")[1] == "second"


def test_publishing_unchanged_code_answers_the_existing_version(
    functions_dir: Path, make_function: FunctionMaker, lambda_client: Any
) -> None:
    directory = make_function("steady", ANSWER.format(answer="same"))

    first = lambda_client.publish_version(FunctionName="steady", Description="the first release")
    again = lambda_client.publish_version(FunctionName="steady", Description="another name for it")
    manifest_after_second = (directory / "function.json").read_bytes()
    folders_after_second = sorted(path.name for path in (directory / "versions").iterdir())
    (directory / "handler.py").write_text(ANSWER.format(answer="changed"))
    changed = lambda_client.publish_version(FunctionName="steady")

    assert (first["Version"], first["Description"]) == ("1", "the first release")
    assert (again["Version"], again["Description"]) == ("1", "the first release")
    assert again["RevisionId"] == first["RevisionId"]
    assert list(json.loads(manifest_after_second)["versions"]) == ["1"]
    assert folders_after_second == ["1"]
    assert changed["Version"] == "2"
    assert sorted(path.name for path in (directory / "versions").iterdir()) == ["1", "2"]


def test_publish_version_checks_code_sha256_and_revision_id(make_function: FunctionMaker, lambda_client: Any) -> None:
    make_function("guarded", ANSWER.format(answer="guarded"))
    latest = lambda_client.get_function(FunctionName="guarded")["Configuration"]

    with pytest.raises(lambda_client.exceptions.InvalidParameterValueException, match="CodeSHA256"):
        lambda_client.publish_version(FunctionName="guarded", CodeSha256="not-the-code")
    with pytest.raises(lambda_client.exceptions.PreconditionFailedException, match="Revision Id"):
        lambda_client.publish_version(FunctionName="guarded", RevisionId="00000000-0000-0000-0000-000000000000")
    published = lambda_client.publish_version(
        FunctionName="guarded", CodeSha256=latest["CodeSha256"], RevisionId=latest["RevisionId"]
    )

    assert published["Version"] == "1"
    assert lambda_client.list_versions_by_function(FunctionName="guarded")["Versions"][1]["Version"] == "1"


def test_publishing_an_unknown_function_is_resource_not_found(lambda_client: Any) -> None:
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException, match="function:nowhere"):
        lambda_client.publish_version(FunctionName="nowhere")


def test_list_versions_by_function_pages_latest_first(make_function: FunctionMaker, lambda_client: Any) -> None:
    directory = make_function("many", ANSWER.format(answer=0))
    for number in range(1, 4):
        (directory / "handler.py").write_text(ANSWER.format(answer=number))
        assert lambda_client.publish_version(FunctionName="many")["Version"] == str(number)

    pages = list(
        lambda_client.get_paginator("list_versions_by_function").paginate(
            FunctionName="many", PaginationConfig={"PageSize": 2}
        )
    )
    listed = [(v["Version"], v["FunctionArn"]) for page in pages for v in page["Versions"]]

    assert [len(page["Versions"]) for page in pages] == [2, 2]
    assert listed == [(version, f"{ARN_PREFIX}many:{version}") for version in ("$LATEST", "1", "2", "3")]
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException):
        lambda_client.list_versions_by_function(FunctionName="absent")
