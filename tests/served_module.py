"""The module as `python app.py` runs it, in a child process, for tests that need a real server (a browser, a
fuzzer's command line): its REST base URL for the block, then SIGTERM, and SIGKILL of its group if it hangs."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from config import PROJECT_ROOT
from tests.conftest import free_port

START_SECONDS = 60


@contextlib.contextmanager
def served_module(folder: Path, **settings: str) -> Iterator[str]:
    """Serve on free loopback ports, with SQLite, logs and journal under `folder` and the embedded runtime (each
    overridable by `settings`); yields the REST base URL once /health answers."""
    rest_port = free_port()
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "LAMBDA_"))},
        "DATABASE_URL": f"sqlite:///{folder / 'module.sqlite'}",
        "LOG_DIR": str(folder / "logs"),
        "LOG_SPOOL_DIR": str(folder / "spool"),
        "LOG_LEVEL": "WARNING",
        "HOST": "127.0.0.1",
        "REST_PORT": str(rest_port),
        "GRPC_PORT": str(free_port()),
        "LAMBDA_BACKEND": "local",
        "LOCAL_LAMBDA_PORT": "0",
        **settings,
    }
    log_path = folder / "module.log"
    log = open(log_path, "wb")  # noqa: SIM115 - the child writes it until it ends
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
        _wait_healthy(base, process, log_path)
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
