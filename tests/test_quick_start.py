"""The README's quick start, as a new user runs it: `make run` with no AWS settings, a token, and `!help`."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
HELP_REQUEST = {"command": "!help", "user": "john"}


@dataclass
class QuickStart:
    process: subprocess.Popen
    output: list[str]
    rest_port: int
    grpc_port: int
    database: Path

    def text(self) -> str:
        return "".join(self.output)


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[QuickStart]:
    """`make run` in the repository, on a machine with no AWS configuration; stopped with SIGTERM afterwards."""
    rest_port, grpc_port = free_port(), free_port()
    database = tmp_path / "quick-start.sqlite"
    environment = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    environment.pop("MODULE_SECRET_KEY", None)
    environment.pop("LAMBDA_BACKEND", None)
    environment.update(
        {
            # Keep this machine's own AWS files, if any, out of the picture.
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
            "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
            # Only what keeps this run off the ports and files of another: the rest are the defaults.
            "REST_PORT": str(rest_port),
            "GRPC_PORT": str(grpc_port),
            "LOCAL_LAMBDA_PORT": "0",
            "DATABASE_URL": f"sqlite:///{database}",
            "LOG_DIR": str(tmp_path / "logs"),
            "LOG_SPOOL_DIR": str(tmp_path / "spool"),
        }
    )
    process = subprocess.Popen(
        ["make", "--no-print-directory", "run"],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output: list[str] = []
    threading.Thread(target=lambda: output.extend(process.stdout), daemon=True).start()
    started = QuickStart(process, output, rest_port, grpc_port, database)
    deadline = time.monotonic() + 60
    while "Running on http" not in started.text():
        if process.poll() is not None or time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"make run did not start serving:\n{started.text()}")
        time.sleep(0.1)
    yield started
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _post(url: str, body: dict, token: str | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def test_make_run_answers_help_from_the_embedded_runtime(make_run: QuickStart, tmp_path: Path):
    base = f"http://127.0.0.1:{make_run.rest_port}"
    secret = re.search(r"client_id=local-dev client_secret=(\S+)", make_run.text()).group(1)
    token = _post(f"{base}/api/v1/token", {"client_id": "local-dev", "client_secret": secret})["token"]

    answer = _post(
        f"{base}/api/v1/invoke", {"function_name": "waddlebot-command-handler", "payload": HELP_REQUEST}, token
    )

    assert answer["success"] is True
    assert answer["payload"]["statusCode"] == 200
    assert "@john" in answer["payload"]["body"]
    assert "!help" in answer["payload"]["body"]
    with urllib.request.urlopen(f"{base}/health", timeout=10) as response:
        backend = json.load(response)["lambda"]
    assert backend["backend"] == "local"
    assert backend["chosen_by"] == "auto: no AWS credentials or endpoint found"
    assert "embedded local runtime" in make_run.text()

    # The README's Python example for gRPC, against the same process, run as its reader would from a folder
    # outside the repository, with the repository on PYTHONPATH as the README says.
    script = tmp_path / "try_grpc.py"
    script.write_text(
        _readme_grpc_example()
        .replace("<the token from POST /api/v1/token>", token)
        .replace("127.0.0.1:50060", f"127.0.0.1:{make_run.grpc_port}")
    )
    printed = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), str(script)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    # It prints: success, status code, payload, invocation id.
    success, status_code, rest = printed.split(" ", 2)
    payload, grpc_invocation_id = rest.rsplit(" ", 1)
    assert (success, status_code) == ("True", "200")
    assert json.loads(payload) == answer["payload"]

    # Records reach the table from the module's journal within a second.
    deadline = time.monotonic() + 10
    while True:
        with sqlite3.connect(make_run.database) as connection:
            rows = connection.execute(
                "SELECT invocation_id, function_name, transport, success FROM lambda_invocations "
                "WHERE success IS NOT NULL ORDER BY id"
            ).fetchall()
        if len(rows) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert rows == [
        (answer["invocation_id"], "waddlebot-command-handler", "rest", "T"),
        (grpc_invocation_id, "waddlebot-command-handler", "grpc", "T"),
    ]


def _readme_grpc_example() -> str:
    """The README's Python block for gRPC, as a reader would copy it."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    [example] = [block for block in blocks if "LambdaActionStub" in block]
    return example
