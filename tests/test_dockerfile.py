"""The container recipe, checked without a Docker engine: its CMD and HEALTHCHECK run here as they would there."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import NamedTuple

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import TEST_SECRET_KEY, free_port

ROOT = Path(__file__).resolve().parent.parent


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    logical, pending = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1].strip()) for text in logical]


def _image_environment() -> dict[str, str]:
    environment = {}
    for keyword, arguments in _instructions():
        if keyword == "ENV":
            for pair in shlex.split(arguments):
                key, _, value = pair.partition("=")
                environment[key] = value
    return environment


def _get_health(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return response.status
    except OSError:
        return 0


def test_image_runs_as_a_non_root_user_and_exposes_both_ports():
    instructions = _instructions()
    users = [arguments for keyword, arguments in instructions if keyword == "USER"]
    assert users, "the image must switch to a non-root user"
    assert users[-1] not in ("root", "0")
    exposed = {port for keyword, arguments in instructions if keyword == "EXPOSE" for port in arguments.split()}
    assert {"8080", "50060"} <= exposed
    assert any(keyword == "HEALTHCHECK" and "/health" in arguments for keyword, arguments in instructions)


def test_every_copied_path_is_in_the_repository():
    for keyword, arguments in _instructions():
        if keyword == "COPY":
            *sources, _destination = arguments.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


def test_every_requirement_of_the_image_is_pinned():
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            assert "==" in line, f"{line}: pin the version so the image build is repeatable"


class RunningContainer(NamedTuple):
    process: subprocess.Popen
    port: int
    grpc_port: int
    environment: dict[str, str]


@pytest.fixture
def container(tmp_path: Path):
    """The image's CMD started in the repository with the image's ENV, as the container would start it."""
    [command] = [arguments for keyword, arguments in _instructions() if keyword == "CMD"]
    port, grpc_port = free_port(), free_port()
    environment = {
        **os.environ,
        **_image_environment(),
        # What an operator supplies to a production container.
        "MODULE_SECRET_KEY": TEST_SECRET_KEY,
        "DATABASE_URL": f"sqlite:///{tmp_path}/container.sqlite",
        "LOG_DIR": str(tmp_path / "logs"),
        "LOG_SPOOL_DIR": str(tmp_path / "spool"),
        "REST_PORT": str(port),
        "GRPC_PORT": str(grpc_port),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        # `python` in the CMD is the image's interpreter; here it is this test run's.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    process = subprocess.Popen(
        json.loads(command), cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 30
    while _get_health(port) != 200:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the container's CMD did not serve /health:\n{process.communicate()[0]}")
        time.sleep(0.2)
    yield RunningContainer(process, port, grpc_port, environment)
    if process.poll() is None:
        process.kill()
        process.wait()


def test_cmd_serves_health_and_the_healthcheck_passes(container: RunningContainer):
    [healthcheck] = [arguments for keyword, arguments in _instructions() if keyword == "HEALTHCHECK"]
    # The exec form, a JSON array, as hadolint asks: run as the container runs it, without a shell.
    probe = json.loads(healthcheck.split(" CMD ", 1)[1])
    probe[0] = sys.executable if probe[0] == "python" else probe[0]
    result = subprocess.run(probe, env=container.environment, capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr


def test_cmd_serves_grpc_too(container: RunningContainer):
    with grpc.insecure_channel(f"127.0.0.1:{container.grpc_port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="lambda_action.LambdaAction"), timeout=10
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_cmd_stops_cleanly_on_sigterm(container: RunningContainer):
    container.process.send_signal(signal.SIGTERM)
    output = container.process.communicate(timeout=30)[0]
    assert container.process.returncode == 0, output
    assert "Traceback" not in output


def test_every_package_of_the_module_is_copied_into_the_image():
    copied = {
        source.rstrip("/")
        for keyword, arguments in _instructions()
        if keyword == "COPY"
        for source in arguments.split()[:-1]
    }
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    modules = {path.name for path in ROOT.glob("*.py")}
    missing = (packages | modules | {"functions"}) - copied
    assert not missing, f"the image would lack {sorted(missing)}: add a COPY line"
