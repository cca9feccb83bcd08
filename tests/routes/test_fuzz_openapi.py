"""schemathesis against the module's own /openapi.json, every check, with a valid token: no failures.

The module runs as `python app.py` does (embedded runtime, SQLite), and schemathesis's command line drives it.
`make test` runs a few examples per operation (FUZZ_EXAMPLES, default 25); `make fuzz` runs many more.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from config import PROJECT_ROOT
from tests.conftest import free_port

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
CLIENT_ID = "fuzz-client"
CLIENT_SECRET = "fuzz-secret-of-some-length"
START_SECONDS = 60


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """The module serving REST on a free port; its base URL. It and its runtime end with the test."""
    rest_port, grpc_port = free_port(), free_port()
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "LAMBDA_"))},
        "MODULE_SECRET_KEY": "f" * 64,
        "BOOTSTRAP_CLIENT_ID": CLIENT_ID,
        "BOOTSTRAP_CLIENT_SECRET": CLIENT_SECRET,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'module.sqlite'}",
        "LOG_DIR": str(tmp_path / "logs"),
        "LOG_SPOOL_DIR": str(tmp_path / "spool"),
        "LOG_LEVEL": "WARNING",
        "HOST": "127.0.0.1",
        "REST_PORT": str(rest_port),
        "GRPC_PORT": str(grpc_port),
        "LAMBDA_BACKEND": "local",
        "LOCAL_LAMBDA_PORT": "0",
        # The fuzzer sends many wrong credentials on purpose: the limits are tested elsewhere.
        "TOKEN_FAILURES_PER_CLIENT": "10000",
        "TOKEN_FAILURES_PER_SOURCE": "100000",
    }
    log = open(tmp_path / "module.log", "wb")  # noqa: SIM115 - the child writes it until it ends
    process = subprocess.Popen(
        [sys.executable, "app.py"],
        cwd=PROJECT_ROOT,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{rest_port}"
    try:
        _wait_healthy(base, process, tmp_path / "module.log")
        yield base
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


def _wait_healthy(base: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the module ended with {process.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"the module did not answer within {START_SECONDS} s:\n{log_path.read_text()}")


def _token(base: str) -> str:
    body = json.dumps({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}).encode()
    request = urllib.request.Request(
        f"{base}/api/v1/token", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["token"]


def _schemathesis(served: str, token: str, cwd: Path, *options: str) -> str:
    """One schemathesis run over every operation with every check (`options` go before `run`); its report."""
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        *options,
        "run",
        f"{served}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        "all",
        "--max-examples",
        str(FUZZ_EXAMPLES),
        "--no-color",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=cwd)
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    summary = report.strip().splitlines()[-1]
    assert "failure" not in summary, report
    assert re.search(r"\d+ generated, \d+ passed", report), report
    # It exercised every operation of the document.
    assert "Selected: 10/10" in report, report
    return report


def test_schemathesis_finds_nothing_in_the_openapi_document(served: str, tmp_path: Path):
    _schemathesis(served, _token(served), tmp_path, "--config-file", str(Path(__file__).with_name("schemathesis.toml")))
