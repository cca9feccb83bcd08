"""The runtime as a process: `python -m local_lambda`, RuntimeProcess, and `python -m local_lambda publish`."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from local_lambda import RuntimeProcess, publish_version, start_runtime_process
from tests.local_lambda.conftest import GATED, FunctionMaker, invoke_json, make_lambda_client, wait_for

REPOSITORY = Path(__file__).resolve().parents[2]
PID_HANDLER = "import os\n\ndef lambda_handler(event, context):\n    return {'pid': os.getpid(), 'event': event}\n"


def _run_module(*arguments: str, **options: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "local_lambda", *arguments],
        cwd=REPOSITORY,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **options,
    )


def _first_line(process: subprocess.Popen[str], timeout: float = 10.0) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "the runtime printed nothing"
    return process.stdout.readline()


def _process_gone(pid: int) -> bool:
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


def test_the_command_line_serves_on_port_0_and_exits_0_on_sigterm(
    functions_dir: Path, make_function: FunctionMaker
) -> None:
    make_function("echo", PID_HANDLER)
    process = _run_module("--functions-dir", str(functions_dir), "--port", "0")
    try:
        line = _first_line(process)
        endpoint_url = line.split()[-1]
        assert line.startswith("local Lambda runtime listening on http://127.0.0.1:")
        assert not endpoint_url.endswith(":0")

        _, payload = invoke_json(make_lambda_client(endpoint_url), "echo", {"hello": "cli"})
        assert payload["event"] == {"hello": "cli"}

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)
    assert _process_gone(payload["pid"])  # its workers stopped with it


def test_the_command_line_exits_1_when_the_port_is_taken(functions_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        process = _run_module("--functions-dir", str(functions_dir), "--port", str(taken.getsockname()[1]))
        _, stderr = process.communicate(timeout=20)

    assert process.returncode == 1
    assert "cannot listen" in stderr


def test_runtime_process_starts_answers_and_stops(functions_dir: Path, make_function: FunctionMaker) -> None:
    make_function("echo", PID_HANDLER)

    runtime = start_runtime_process(functions_dir, port=0, ready_timeout=20)
    try:
        assert runtime.running
        assert runtime.endpoint_url == f"http://127.0.0.1:{runtime.port}"
        _, payload = invoke_json(make_lambda_client(runtime.endpoint_url), "echo", {"n": 1})
        assert payload["event"] == {"n": 1}
    finally:
        returncode = runtime.stop()

    assert returncode == 0
    assert not runtime.running
    assert _process_gone(runtime.pid)
    assert _process_gone(payload["pid"])


def test_runtime_process_stops_when_its_parent_is_gone(functions_dir: Path) -> None:
    runtime = RuntimeProcess.start(functions_dir, port=0, ready_timeout=20)
    try:
        # What happens when the parent dies, however abruptly: the pipe the child watches loses its writer.
        assert runtime._watch_fd is not None
        os.close(runtime._watch_fd)
        runtime._watch_fd = None
        wait_for(lambda: not runtime.running, "the runtime to notice its parent is gone")
    finally:
        runtime.stop()
    assert runtime.process.returncode == 0


def test_runtime_process_reports_a_failed_start(functions_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(RuntimeError, match="not ready"):
            RuntimeProcess.start(functions_dir, port=taken.getsockname()[1], ready_timeout=20, log_level="ERROR")


def test_publish_copies_the_code_into_an_immutable_version(
    functions_dir: Path, make_function: FunctionMaker, runtime: Any, lambda_client: Any
) -> None:
    code = "def lambda_handler(event, context):\n    return ANSWER\n"
    directory = make_function("published", 'ANSWER = "first"\n' + code, environment={"STAGE": "one"})

    assert publish_version(functions_dir, "published") == "1"
    assert publish_version(functions_dir, "published") == "1"  # nothing changed: no new version
    assert sorted(path.name for path in (directory / "versions" / "1").iterdir()) == ["handler.py"]
    (directory / "handler.py").write_text('ANSWER = "second"\n' + code)
    manifest = json.loads((directory / "function.json").read_text())
    manifest["environment"] = {"STAGE": "two"}
    (directory / "function.json").write_text(json.dumps(manifest))

    assert invoke_json(lambda_client, "published", Qualifier="1")[1] == "first"
    assert invoke_json(lambda_client, "published")[1] == "second"
    version_1 = lambda_client.get_function_configuration(FunctionName="published", Qualifier="1")
    assert version_1["Environment"] == {"Variables": {"STAGE": "one"}}  # recorded when published

    completed = subprocess.run(
        [sys.executable, "-m", "local_lambda", "publish", "published", "--functions-dir", str(functions_dir)],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "published: version 2"
    assert invoke_json(lambda_client, "published", Qualifier="2")[1] == "second"
    assert invoke_json(lambda_client, "published", Qualifier="1")[1] == "first"


def test_the_runtime_process_takes_its_settings_from_the_environment(
    functions_dir: Path, make_function: FunctionMaker, exchange_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As the module starts it: the runtime's process inherits the environment, settings included.
    monkeypatch.setenv("LOCAL_LAMBDA_MAX_CONCURRENCY", "1")
    make_function("held", GATED)
    started, release = exchange_dir / "started", exchange_dir / "release"

    with RuntimeProcess.start(functions_dir, port=0) as runtime:
        client = make_lambda_client(runtime.endpoint_url)
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(invoke_json, client, "held", {"started": str(started), "release": str(release)})
            try:
                wait_for(started.exists, "the first call to start")
                with pytest.raises(client.exceptions.TooManyRequestsException) as refused:
                    client.invoke(FunctionName="held", Payload=b"{}")
            finally:
                release.touch()
            assert held.result()[1] == "done"

    assert refused.value.response["Reason"] == "ConcurrentInvocationLimitExceeded"


def test_the_command_line_refuses_a_bad_setting_naming_it(functions_dir: Path) -> None:
    process = _run_module(
        "--functions-dir", str(functions_dir), "--port", "0", env={**os.environ, "LOCAL_LAMBDA_MAX_CONCURRENCY": "none"}
    )
    _, errors = process.communicate(timeout=30)

    assert process.returncode == 2
    assert "LOCAL_LAMBDA_MAX_CONCURRENCY must be a whole number from 1 to 1000" in errors
