"""Fixtures: the real runtime on a free port over functions written into tmp_path, and a real boto3 client."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from local_lambda import LocalLambdaRuntime
from local_lambda.settings import RuntimeSettings

REGION = "us-east-1"
# Every wait in these tests is bounded by this; a healthy runtime answers in milliseconds.
WAIT_SECONDS = 10.0

FunctionMaker = Callable[..., Path]


# Each call marks its arrival in event["folder"] and waits (at most 5 s) until event["expected"] calls have
# arrived: concurrent calls on distinct workers meet; calls made one after another would not.
GATHERING = """
import os
import time
from pathlib import Path

def lambda_handler(event, context):
    Path(event["folder"], str(os.getpid())).touch()
    deadline = time.monotonic() + 5
    while len(os.listdir(event["folder"])) < event["expected"] and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.getpid()
"""


def gated_handler(answer: str) -> str:
    """A handler that holds its call until event["release"] exists, after touching event["started"]; then writes
    event["path"] and returns `answer` (a Python expression)."""
    return """
import os
import time
from pathlib import Path

def lambda_handler(event, context):
    if "started" in event:
        Path(event["started"]).touch()
        deadline = time.monotonic() + 10
        while not os.path.exists(event["release"]) and time.monotonic() < deadline:
            time.sleep(0.01)
    if "path" in event:
        Path(event["path"]).write_text("ran")
    return ANSWER
""".replace("ANSWER", answer)


GATED = gated_handler('"done"')


def make_lambda_client(endpoint_url: str) -> Any:
    """A boto3 Lambda client for the runtime: any credentials, no retries, bounded reads."""
    return boto3.client(
        "lambda",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=30),
    )


def write_function(functions_dir: Path, name: str, code: str, **manifest: Any) -> Path:
    """Write a function folder: handler.py holding `code` (dedented) and function.json holding `manifest`."""
    directory = functions_dir / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "handler.py").write_text(textwrap.dedent(code))
    (directory / "function.json").write_text(json.dumps(manifest))
    return directory


def invoke_json(client: Any, name: str, event: Any = None, **options: Any) -> tuple[dict[str, Any], Any]:
    """Invoke synchronously; the boto3 response and its decoded payload."""
    response = client.invoke(FunctionName=name, Payload=json.dumps({} if event is None else event), **options)
    return response, json.loads(response["Payload"].read())


def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT_SECONDS) -> None:
    """Poll `condition` until it holds; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.01)


@pytest.fixture
def functions_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "functions"
    directory.mkdir()
    return directory


@pytest.fixture
def exchange_dir(tmp_path: Path) -> Path:
    """A folder both the test and its handlers write in.

    Handlers may write nowhere else but their own TMPDIR: when the runtime runs as root they run as an
    unprivileged user, which cannot write into the test's own temporary folders.
    """
    directory = tmp_path / "exchange"
    directory.mkdir()
    directory.chmod(0o777)
    return directory


@pytest.fixture
def make_function(functions_dir: Path) -> FunctionMaker:
    """Write a function into the test's functions folder (see write_function)."""

    def make(name: str, code: str, **manifest: Any) -> Path:
        return write_function(functions_dir, name, code, **manifest)

    return make


@pytest.fixture
def dead_letter_dir(tmp_path: Path) -> Path:
    """Where the test's runtime writes the Event invocations that failed for good."""
    return tmp_path / "failed-events"


@pytest.fixture
def runtime_settings(dead_letter_dir: Path) -> RuntimeSettings:
    """The test runtime's settings: not the host's, so that every machine runs the tests alike; retries quick."""
    return RuntimeSettings(max_concurrency=64, event_retry_delays=(0.05, 0.1), dead_letter_dir=dead_letter_dir)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """The test runtime's cache (functions' installed requirements): the test's own, not the checkout's data/."""
    return tmp_path / "cache"


@pytest.fixture
def runtime(functions_dir: Path, runtime_settings: RuntimeSettings, cache_dir: Path) -> Iterator[LocalLambdaRuntime]:
    """The runtime serving the test's functions folder on a free port, from a background thread."""
    served = LocalLambdaRuntime(functions_dir, port=0, region=REGION, settings=runtime_settings, cache_dir=cache_dir)
    with served.run_in_thread() as running:
        yield running


@pytest.fixture
def lambda_client(runtime: LocalLambdaRuntime) -> Any:
    """A boto3 Lambda client pointed at `runtime`."""
    return make_lambda_client(runtime.endpoint_url)
