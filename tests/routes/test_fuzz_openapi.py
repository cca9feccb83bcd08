"""schemathesis against the module's own /openapi.json, every check, with a valid token: no failures.

The module runs as `python app.py` does (embedded runtime, SQLite), and schemathesis's command line drives it.
`make test` runs a few examples per operation (FUZZ_EXAMPLES, default 25); `make fuzz` runs many more.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.served_module import served_module

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
CLIENT_ID = "fuzz-client"
CLIENT_SECRET = "fuzz-secret-of-some-length"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """The module serving REST on a free port; its base URL. It and its runtime end with the test."""
    with served_module(
        tmp_path,
        MODULE_SECRET_KEY="f" * 64,
        BOOTSTRAP_CLIENT_ID=CLIENT_ID,
        BOOTSTRAP_CLIENT_SECRET=CLIENT_SECRET,
        # The fuzzer sends many wrong credentials on purpose: the limits are tested elsewhere.
        TOKEN_FAILURES_PER_CLIENT="10000",
        TOKEN_FAILURES_PER_SOURCE="100000",
    ) as base:
        yield base


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
    assert "Selected: 11/11" in report, report
    return report


def test_schemathesis_finds_nothing_in_the_openapi_document(served: str, tmp_path: Path):
    _schemathesis(served, _token(served), tmp_path, "--config-file", str(Path(__file__).with_name("schemathesis.toml")))
