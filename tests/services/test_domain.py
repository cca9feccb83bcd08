"""The domain's rules, each written once: function references, qualifiers, invocation types, page sizes."""

from __future__ import annotations

import pytest

from services.domain import (
    FUNCTION_REFERENCE_MAX_LENGTH,
    MAX_LIST_PAGE,
    FunctionOwner,
    InvokeResult,
    check_alias,
    check_page_size,
    check_qualifier,
    check_version,
    function_name_of,
    invocation_type_of,
    owner_named_by,
    partition_of,
)
from services.errors import InvalidRequest

ARN = "arn:aws:lambda:us-east-1:123456789012:function:waddlebot-echo"


@pytest.mark.parametrize(
    ("reference", "name"),
    [
        ("waddlebot-echo", "waddlebot-echo"),
        (ARN, "waddlebot-echo"),
        ("arn:aws-cn:lambda:cn-north-1:123456789012:function:waddlebot-echo", "waddlebot-echo"),
        ("123456789012:function:waddlebot-echo", "waddlebot-echo"),
        ("f" * 64, "f" * 64),
    ],
)
def test_a_function_is_named_by_name_arn_or_partial_arn(reference: str, name: str):
    assert function_name_of(reference) == name


@pytest.mark.parametrize(
    "reference",
    [
        "",
        "f" * 65,
        "waddlebot-echo\n",
        "waddlebot-echo:live",
        f"{ARN}:live",
        "arn:aws:lambda:us-east-1:function:waddlebot-echo",
        "12345:function:waddlebot-echo",
        "arn:aws:lambda:us-east-1:123456789012:function:" + "f" * 64 + "x" * 40,
    ],
)
def test_anything_else_is_refused_with_what_lambda_accepts(reference: str):
    with pytest.raises(InvalidRequest, match="function_name must be a Lambda function name"):
        function_name_of(reference)


def test_an_arn_longer_than_lambdas_limit_is_refused_even_with_a_valid_name():
    prefix = "arn:aws-" + "x" * (FUNCTION_REFERENCE_MAX_LENGTH - 60) + ":lambda:us-east-1:123456789012:function:"
    reference = prefix + "f" * 20
    assert len(reference) > FUNCTION_REFERENCE_MAX_LENGTH
    with pytest.raises(InvalidRequest):
        function_name_of(reference)


@pytest.mark.parametrize("alias", ["live", "v2-beta", "a" * 128])
def test_alias_names_as_lambda_has_them(alias: str):
    check_alias(alias)
    check_qualifier(alias)


@pytest.mark.parametrize("alias", ["", "12", "live\n", "a" * 129, "li ve"])
def test_malformed_aliases_are_refused(alias: str):
    with pytest.raises(InvalidRequest, match="alias"):
        check_alias(alias)


@pytest.mark.parametrize("version", ["$LATEST", "1", "4294967295"])
def test_versions_as_lambda_has_them(version: str):
    check_version(version)
    check_qualifier(version)


@pytest.mark.parametrize("version", ["", "1\n", "v1", "12345678901", "$latest"])
def test_malformed_versions_are_refused(version: str):
    with pytest.raises(InvalidRequest, match="version"):
        check_version(version)


@pytest.mark.parametrize("qualifier", ["", "live\n", "1\n", "a b"])
def test_malformed_qualifiers_are_refused(qualifier: str):
    with pytest.raises(InvalidRequest, match="qualifier"):
        check_qualifier(qualifier)


def test_invocation_types_are_lambdas_three():
    assert [invocation_type_of(value) for value in ("RequestResponse", "Event", "DryRun")] == [
        "RequestResponse",
        "Event",
        "DryRun",
    ]
    with pytest.raises(InvalidRequest, match="RequestResponse, Event, DryRun"):
        invocation_type_of("Sync")


def test_page_sizes_are_bounded_by_lambdas_page():
    check_page_size(1)
    check_page_size(MAX_LIST_PAGE)
    for size in (0, MAX_LIST_PAGE + 1):
        with pytest.raises(InvalidRequest, match=f"between 1 and {MAX_LIST_PAGE}"):
            check_page_size(size)


@pytest.mark.parametrize(
    ("payload", "value"),
    [("", None), ('{"a": 1}', {"a": 1}), ("not json", "not json"), ("3", 3)],
)
def test_an_answer_is_parsed_once_into_its_json_value(payload: str, value: object):
    result = InvokeResult(
        invocation_id="i", function_name="f", invocation_type="RequestResponse", status_code=200, payload=payload
    )
    assert result.payload_value == value
    # Parsed once: the same object on every read.
    assert result.payload_value is result.payload_value


@pytest.mark.parametrize(
    ("reference", "owner"),
    [
        ("waddlebot-echo", None),
        (ARN, FunctionOwner("123456789012", "us-east-1", "aws")),
        (
            "arn:aws-cn:lambda:cn-north-1:123456789012:function:waddlebot-echo",
            FunctionOwner("123456789012", "cn-north-1", "aws-cn"),
        ),
        ("123456789012:function:waddlebot-echo", FunctionOwner("123456789012")),
    ],
)
def test_the_owner_an_arn_names(reference: str, owner: FunctionOwner | None):
    assert owner_named_by(reference) == owner


@pytest.mark.parametrize(
    ("region", "partition"),
    [("us-east-1", "aws"), ("eu-west-1", "aws"), ("cn-north-1", "aws-cn"), ("us-gov-west-1", "aws-us-gov")],
)
def test_a_region_belongs_to_its_partition(region: str, partition: str):
    assert partition_of(region) == partition
