"""The Python a function runs on, through real boto3: the one its runtime names when installed, else the host's."""

from __future__ import annotations

import base64
import glob
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from local_lambda.interpreters import HOST_VERSION, INTERPRETERS_VARIABLE, Interpreters
from local_lambda.settings import runtime_settings
from tests.local_lambda.conftest import FunctionMaker, invoke_json

REPORTER = """
import os
import sys

import boto3

def lambda_handler(event, context):
    return {
        "version": "%d.%d" % sys.version_info[:2],
        "execution_env": os.environ["AWS_EXECUTION_ENV"],
        "boto3": boto3.__version__,
        "text": "caf\\u00e9",
        "bytecode": sys.pycache_prefix,
    }
"""


def installed_interpreter(version: str) -> str | None:
    """A working pythonX.Y on this machine (pyenv's or named in LOCAL_LAMBDA_PYTHONS), found independently."""
    named = [path for path in os.environ.get(INTERPRETERS_VARIABLE, "").split(os.pathsep) if path]
    pyenv_root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    for candidate in [*named, *glob.glob(f"{pyenv_root}/versions/{version}.*/bin/python{version}")]:
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True)
        if probe.returncode == 0 and probe.stdout.decode().strip() == str(tuple(map(int, version.split(".")))):
            return candidate
    return None


@pytest.mark.parametrize("version", ["3.12", "3.13"])
def test_a_function_runs_on_the_python_its_runtime_names(
    make_function: FunctionMaker, lambda_client: Any, version: str
) -> None:
    if installed_interpreter(version) is None:
        pytest.skip(f"no python{version} installed here")
    make_function("reporter", REPORTER, runtime=f"python{version}")

    response, payload = invoke_json(lambda_client, "reporter", LogType="Tail")

    assert "FunctionError" not in response, payload
    assert payload["version"] == version
    assert payload["execution_env"] == f"AWS_Lambda_python{version}"
    assert payload["text"] == "café"
    import boto3

    assert payload["boto3"] == boto3.__version__  # the provided copy
    assert "no python" not in base64.b64decode(response["LogResult"]).decode()
    # boto3's bytecode for this Python is kept for the next cold start, outside the gateway's packages.
    tag = "cpython-" + version.replace(".", "")
    assert list(Path(payload["bytecode"]).rglob(f"botocore/__init__.{tag}.pyc"))


def test_a_runtime_not_installed_runs_on_the_hosts_python_and_says_so_once(
    make_function: FunctionMaker, lambda_client: Any
) -> None:
    make_function("reporter", REPORTER, runtime="python3.99")

    first, payload = invoke_json(lambda_client, "reporter", LogType="Tail")
    second, _ = invoke_json(lambda_client, "reporter", LogType="Tail")

    assert payload["version"] == HOST_VERSION
    assert payload["bytecode"] is None  # the runtime's own Python has the provided packages' bytecode
    first_log = base64.b64decode(first["LogResult"]).decode()
    notice = f"local runtime: no python3.99 interpreter found (set {INTERPRETERS_VARIABLE} to name one); "
    assert notice + f"running on Python {HOST_VERSION} at {sys.executable}" in first_log
    assert first_log.index(notice) > first_log.index("START RequestId:")
    assert "no python3.99" not in base64.b64decode(second["LogResult"]).decode()


def _script(path: Path, body: str) -> str:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_candidates_that_fail_or_lie_about_their_version_are_passed_over(tmp_path: Path) -> None:
    # A pyenv shim for a version pyenv lacks fails; a wrapper may run another version than its name says.
    failing = _script(tmp_path / "python3.12", 'echo "pyenv: python3.12: command not found" >&2; exit 127')
    lying = _script(tmp_path / "lying-python3.12", f'exec {sys.executable} "$@"')
    environ = {"PATH": str(tmp_path), "PYENV_ROOT": str(tmp_path / "no-pyenv")}

    chosen = Interpreters([failing, lying], environ).for_runtime("python3.12")

    assert chosen.path == sys.executable
    assert chosen.notice is not None
    assert "no python3.12 interpreter found" in chosen.notice


def test_an_interpreter_named_in_the_setting_is_used(tmp_path: Path) -> None:
    real = installed_interpreter("3.13")
    if real is None:
        pytest.skip("no python3.13 installed here")
    wrapper = _script(tmp_path / "wrapped-python", f'exec {real} "$@"')
    settings = runtime_settings({INTERPRETERS_VARIABLE: wrapper})
    environ = {"PATH": "", "PYENV_ROOT": str(tmp_path / "no-pyenv")}

    chosen = Interpreters(settings.interpreters, environ).for_runtime("python3.13")

    assert (chosen.path, chosen.version, chosen.notice) == (wrapper, "3.13", None)
