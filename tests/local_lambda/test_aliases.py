"""CreateAlias, GetAlias, ListAliases and UpdateAlias through boto3: aliases are lines of the function's manifest."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.local_lambda.conftest import FunctionMaker, invoke_json

ARN_PREFIX = "arn:aws:lambda:us-east-1:000000000000:function:"
ANSWER = "ANSWER = {answer!r}\n\ndef lambda_handler(event, context):\n    return ANSWER\n"


def _two_versions(make_function: FunctionMaker, lambda_client: Any, name: str) -> Path:
    """A function with versions 1 and 2 (answering "one" and "two") and $LATEST answering "latest"."""
    directory = make_function(name, ANSWER.format(answer="one"), environment={"KEPT": "yes"})
    lambda_client.publish_version(FunctionName=name)
    (directory / "handler.py").write_text(ANSWER.format(answer="two"))
    lambda_client.publish_version(FunctionName=name)
    (directory / "handler.py").write_text(ANSWER.format(answer="latest"))
    return directory


def test_create_alias_writes_the_manifest_and_routes_calls(make_function: FunctionMaker, lambda_client: Any) -> None:
    directory = _two_versions(make_function, lambda_client, "aliased")

    created = lambda_client.create_alias(FunctionName="aliased", Name="live", FunctionVersion="1")
    fetched = lambda_client.get_alias(FunctionName="aliased", Name="live")

    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    expected = {
        "AliasArn": f"{ARN_PREFIX}aliased:live",
        "Name": "live",
        "FunctionVersion": "1",
        "Description": "",
        "RevisionId": created["RevisionId"],
    }
    assert {key: created[key] for key in expected} == expected
    assert {key: fetched[key] for key in expected} == expected
    manifest = json.loads((directory / "function.json").read_text())
    assert manifest["aliases"] == {"live": "1"}
    assert manifest["environment"] == {"KEPT": "yes"}  # the rest of the manifest as it was
    assert invoke_json(lambda_client, "aliased", Qualifier="live")[1] == "one"
    assert lambda_client.invoke(FunctionName="aliased:live")["ExecutedVersion"] == "1"


def test_alias_mistakes_are_answered_as_lambda_does(make_function: FunctionMaker, lambda_client: Any) -> None:
    _two_versions(make_function, lambda_client, "strict")
    lambda_client.create_alias(FunctionName="strict", Name="live", FunctionVersion="1")

    with pytest.raises(lambda_client.exceptions.ResourceConflictException, match="Alias already exists"):
        lambda_client.create_alias(FunctionName="strict", Name="live", FunctionVersion="2")
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException, match="strict:7"):
        lambda_client.create_alias(FunctionName="strict", Name="beta", FunctionVersion="7")
    with pytest.raises(lambda_client.exceptions.InvalidParameterValueException, match="alias name"):
        lambda_client.create_alias(FunctionName="strict", Name="123", FunctionVersion="1")
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException, match="Alias not found"):
        lambda_client.get_alias(FunctionName="strict", Name="absent")
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException, match="Alias not found"):
        lambda_client.update_alias(FunctionName="strict", Name="absent", FunctionVersion="1")
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException, match="function:nowhere"):
        lambda_client.create_alias(FunctionName="nowhere", Name="live", FunctionVersion="1")
    with pytest.raises(lambda_client.exceptions.InvalidParameterValueException, match="RoutingConfig"):
        lambda_client.create_alias(
            FunctionName="strict",
            Name="canary",
            FunctionVersion="1",
            RoutingConfig={"AdditionalVersionWeights": {"2": 0.1}},
        )
    assert lambda_client.get_alias(FunctionName="strict", Name="live")["FunctionVersion"] == "1"


def test_update_alias_moves_it_and_checks_the_revision(make_function: FunctionMaker, lambda_client: Any) -> None:
    directory = _two_versions(make_function, lambda_client, "moving")
    created = lambda_client.create_alias(FunctionName="moving", Name="live", FunctionVersion="1")

    moved = lambda_client.update_alias(
        FunctionName="moving", Name="live", FunctionVersion="2", RevisionId=created["RevisionId"]
    )
    described = lambda_client.update_alias(FunctionName="moving", Name="live", Description="the release")

    assert moved["FunctionVersion"] == "2"
    assert moved["RevisionId"] != created["RevisionId"]
    assert (described["FunctionVersion"], described["Description"]) == ("2", "the release")
    assert json.loads((directory / "function.json").read_text())["aliases"] == {
        "live": {"version": "2", "description": "the release"}
    }
    assert invoke_json(lambda_client, "moving", Qualifier="live")[1] == "two"
    with pytest.raises(lambda_client.exceptions.PreconditionFailedException, match="Revision Id"):
        lambda_client.update_alias(
            FunctionName="moving", Name="live", FunctionVersion="1", RevisionId=created["RevisionId"]
        )
    assert lambda_client.get_alias(FunctionName="moving", Name="live")["FunctionVersion"] == "2"


def test_list_aliases_pages_and_filters_by_version(make_function: FunctionMaker, lambda_client: Any) -> None:
    _two_versions(make_function, lambda_client, "listed")
    for name, version in [("d", "2"), ("a", "1"), ("c", "$LATEST"), ("b", "2")]:
        lambda_client.create_alias(FunctionName="listed", Name=name, FunctionVersion=version)

    pages = list(
        lambda_client.get_paginator("list_aliases").paginate(FunctionName="listed", PaginationConfig={"PageSize": 3})
    )
    on_two = lambda_client.list_aliases(FunctionName="listed", FunctionVersion="2")["Aliases"]

    assert [[alias["Name"] for alias in page["Aliases"]] for page in pages] == [["a", "b", "c"], ["d"]]
    assert [(alias["Name"], alias["AliasArn"]) for alias in on_two] == [
        ("b", f"{ARN_PREFIX}listed:b"),
        ("d", f"{ARN_PREFIX}listed:d"),
    ]
    assert lambda_client.list_aliases(FunctionName="listed", FunctionVersion="7")["Aliases"] == []


def test_concurrent_alias_writes_lose_nothing(make_function: FunctionMaker, lambda_client: Any) -> None:
    directory = make_function("busy", ANSWER.format(answer="busy"))
    names = [f"alias-{number}" for number in range(12)]

    with ThreadPoolExecutor(len(names)) as pool:
        list(
            pool.map(
                lambda name: lambda_client.create_alias(FunctionName="busy", Name=name, FunctionVersion="$LATEST"),
                names,
            )
        )

    # Each write read the manifest as the one before left it, under the folder's lock.
    assert json.loads((directory / "function.json").read_text())["aliases"] == dict.fromkeys(names, "$LATEST")
    assert not [path.name for path in directory.iterdir() if path.name.startswith(".")]  # no staged file left
