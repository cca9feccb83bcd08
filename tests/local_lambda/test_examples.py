"""The example functions shipped in functions/, as the README uses them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local_lambda import LocalLambdaRuntime
from tests.local_lambda.conftest import invoke_json, make_lambda_client

SHIPPED_FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"


@pytest.fixture(scope="module")
def shipped_client() -> Iterator[Any]:
    """A client of a runtime serving the repository's own functions folder."""
    with LocalLambdaRuntime(SHIPPED_FUNCTIONS, port=0).run_in_thread() as runtime:
        yield make_lambda_client(runtime.endpoint_url)


@pytest.mark.parametrize(("qualifier", "executed_version"), [(None, "$LATEST"), ("live", "1")])
def test_command_handler_answers_help_for_john(
    shipped_client: Any, qualifier: str | None, executed_version: str
) -> None:
    options = {} if qualifier is None else {"Qualifier": qualifier}

    response, payload = invoke_json(
        shipped_client, "waddlebot-command-handler", {"command": "!help", "user": "john"}, **options
    )

    assert response["ExecutedVersion"] == executed_version
    assert payload["statusCode"] == 200
    assert payload["body"].startswith("@john")
    for command in ("!help", "!hello", "!roll", "!echo"):
        assert command in payload["body"]


def test_command_handler_answers_its_other_commands(shipped_client: Any) -> None:
    def ask(command: str) -> dict[str, Any]:
        return invoke_json(shipped_client, "waddlebot-command-handler", {"command": command, "user": "john"})[1]

    assert ask("!hello") == {"statusCode": 200, "body": "Hello @john, I'm WaddleBot!"}
    assert ask("!echo waddle waddle") == {"statusCode": 200, "body": "waddle waddle"}
    roll = ask("!roll 2d6")
    assert roll["statusCode"] == 200
    total = re.fullmatch(r"@john rolled 2d6: (\d) \+ (\d) = (\d+)", roll["body"])
    assert total is not None
    assert int(total[1]) + int(total[2]) == int(total[3])
    assert ask("!roll 500d6")["statusCode"] == 400


def test_command_handler_explains_unknown_commands(shipped_client: Any) -> None:
    _, payload = invoke_json(shipped_client, "waddlebot-command-handler", {"command": "!dance", "user": "john"})

    assert payload["statusCode"] == 400
    assert "!dance" in payload["body"]
    assert "!help" in payload["body"]


def test_echo_returns_its_event(shipped_client: Any) -> None:
    event = {"command": "!help", "user": "john", "nested": {"list": [1, 2.5, None, True]}}

    response, payload = invoke_json(shipped_client, "waddlebot-echo", event)

    assert payload == event
    assert response["ExecutedVersion"] == "$LATEST"


def test_shipped_functions_are_listed(shipped_client: Any) -> None:
    functions = {f["FunctionName"]: f for f in shipped_client.list_functions()["Functions"]}

    assert {"waddlebot-command-handler", "waddlebot-echo"} <= set(functions)
    assert functions["waddlebot-command-handler"]["Environment"] == {"Variables": {"BOT_NAME": "WaddleBot"}}
