"""The JSON rules callers' payloads are held to: UTF-8, standard numbers, nested within MAX_JSON_DEPTH."""

from __future__ import annotations

import pytest

from services.errors import InvalidRequest
from services.json_rules import MAX_JSON_DEPTH, check_depth, parse_json


def _nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def test_json_nested_to_the_limit_is_taken_and_one_more_level_is_refused():
    assert parse_json(_nested(MAX_JSON_DEPTH), "payload") is not None
    with pytest.raises(InvalidRequest, match=f"payload is nested more than {MAX_JSON_DEPTH} levels"):
        parse_json(_nested(MAX_JSON_DEPTH + 1), "payload")


def test_json_deep_enough_to_exhaust_the_parser_is_refused_the_same_way():
    with pytest.raises(InvalidRequest, match="nested more than"):
        parse_json("[" * 100_000 + "]" * 100_000, "payload")


def test_a_wide_value_with_many_brackets_but_little_depth_is_taken():
    text = "[" + ",".join(["[1]"] * 10_000) + "]"
    assert len(parse_json(text, "payload")) == 10_000


def test_check_depth_walks_a_parsed_value_without_recursion():
    value: list = []
    inner = value
    for _ in range(10_000):
        inner.append([])
        inner = inner[0]
    with pytest.raises(InvalidRequest, match="client_context is nested"):
        check_depth(value, "client_context")


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400", "-1E999"])
def test_numbers_json_does_not_allow_are_refused(number):
    with pytest.raises(InvalidRequest, match=f"payload holds {number}, a number JSON does not allow"):
        parse_json('{"x": ' + number + "}", "payload")


def test_ordinary_numbers_are_taken():
    assert parse_json('{"x": 1.5e300, "y": -0.0, "z": 12345678901234567890}', "payload") == {
        "x": 1.5e300,
        "y": -0.0,
        "z": 12345678901234567890,
    }


def test_bytes_that_are_not_utf8_are_refused_with_the_position():
    with pytest.raises(InvalidRequest, match=r"the request body is not UTF-8 text \(byte 7"):
        parse_json(b'{"a": "\xff"}', "the request body")


def test_text_that_is_not_json_says_so():
    with pytest.raises(InvalidRequest, match="payload must be JSON"):
        parse_json("{'single': 'quotes'}", "payload")
