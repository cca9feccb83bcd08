"""A handler's confinement, through real boto3: what it can import, its memory, its /tmp, its user and folder."""

from __future__ import annotations

import base64
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from local_lambda import LocalLambdaRuntime
from local_lambda.sandbox import SANDBOX_USER
from tests.local_lambda.conftest import REGION, FunctionMaker, invoke_json, make_lambda_client

IMPORTER = """
import importlib

def lambda_handler(event, context):
    module = importlib.import_module(event["module"])
    return {"file": getattr(module, "__file__", None), "version": getattr(module, "__version__", None)}
"""


def _log(response: dict[str, Any]) -> str:
    return base64.b64decode(response["LogResult"]).decode()


@pytest.mark.parametrize("module", ["quart", "pydal", "pydantic", "moto", "local_lambda"])
def test_the_gateways_packages_and_the_runtime_are_not_importable(
    make_function: FunctionMaker, lambda_client: Any, module: str
) -> None:
    make_function("importer", f"import {module}\n\ndef lambda_handler(event, context):\n    return 1\n")

    response, payload = invoke_json(lambda_client, "importer")

    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "Runtime.ImportModuleError"
    assert payload["errorMessage"] == f"Unable to import module 'handler': No module named '{module}'"


def test_boto3_is_provided_after_the_functions_own_code(make_function: FunctionMaker, lambda_client: Any) -> None:
    make_function("importer", IMPORTER)

    _, boto3 = invoke_json(lambda_client, "importer", {"module": "boto3"})
    _, dateutil = invoke_json(lambda_client, "importer", {"module": "dateutil.parser"})

    assert boto3["file"].endswith("boto3/__init__.py")
    assert "site-packages" not in boto3["file"]  # through the provided folder, not the gateway's path
    assert dateutil["file"].endswith("dateutil/parser/__init__.py")


def test_a_vendored_package_wins_over_the_provided_one(make_function: FunctionMaker, lambda_client: Any) -> None:
    folder = make_function("importer", IMPORTER)
    (folder / "boto3").mkdir()
    (folder / "boto3" / "__init__.py").write_text('__version__ = "vendored"\n')

    _, payload = invoke_json(lambda_client, "importer", {"module": "boto3"})

    assert payload == {"file": str(folder / "boto3" / "__init__.py"), "version": "vendored"}


GROWER = """
import time

def lambda_handler(event, context):
    chunks = []
    for _ in range(event["megabytes"] // 8):
        chunks.append(b"x" * (8 * 1024 * 1024))  # written, so resident
        time.sleep(0.005)
    time.sleep(event.get("then_sleep", 0))
    return len(chunks)
"""


def test_memory_is_enforced_while_the_handler_runs(make_function: FunctionMaker, lambda_client: Any) -> None:
    make_function("grower", GROWER, memory_size=128, timeout=30)

    started = time.monotonic()
    response, payload = invoke_json(lambda_client, "grower", {"megabytes": 400, "then_sleep": 20}, LogType="Tail")
    elapsed = time.monotonic() - started
    _, after = invoke_json(lambda_client, "grower", {"megabytes": 8})

    assert elapsed < 5  # stopped while growing, not after its 20 s sleep
    assert response["FunctionError"] == "Unhandled"
    request_id = response["ResponseMetadata"]["RequestId"]
    assert payload == {
        "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: signal: killed",
        "errorType": "Runtime.OutOfMemory",
    }
    log = _log(response)
    assert f"RequestId: {request_id} Error: Runtime exited with error: signal: killed\nRuntime.OutOfMemory" in log
    assert "Max Memory Used: 128 MB" in log
    assert after == 1


def test_memory_is_enforced_while_the_handler_is_imported(make_function: FunctionMaker, lambda_client: Any) -> None:
    make_function(
        "grows-on-import",
        """
        import time

        CHUNKS = []
        for _ in range(50):
            CHUNKS.append(b"x" * (8 * 1024 * 1024))
            time.sleep(0.005)
        time.sleep(8)

        def lambda_handler(event, context):
            return len(CHUNKS)
        """,
        memory_size=128,
    )

    started = time.monotonic()
    response, payload = invoke_json(lambda_client, "grows-on-import")

    assert time.monotonic() - started < 5  # stopped while importing, not after its 8 s sleep
    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "Runtime.OutOfMemory"
    assert payload["errorMessage"].endswith("Error: Runtime exited with error: signal: killed")


REPORTER = """
import os
import tempfile

def lambda_handler(event, context):
    with tempfile.NamedTemporaryFile(delete=False) as scratch:
        scratch.write(b"scratch")
    try:
        with open(os.path.join(os.environ["LAMBDA_TASK_ROOT"], "written.txt"), "w") as own:
            own.write("x")
        wrote_code_folder = True
    except OSError as error:
        wrote_code_folder = error.__class__.__name__
    return {
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "tmp": tempfile.gettempdir(),
        "scratch": scratch.name,
        "TMPDIR": os.environ.get("TMPDIR"),
        "HOME": os.environ.get("HOME"),
        "PWD": os.environ.get("PWD"),
        "cwd": os.getcwd(),
        "wrote_code_folder": wrote_code_folder,
    }
"""


def test_each_function_has_its_own_tmp_removed_when_the_runtime_stops(
    make_function: FunctionMaker, functions_dir: Path
) -> None:
    make_function("first", REPORTER)
    make_function("second", REPORTER)
    with LocalLambdaRuntime(functions_dir, port=0, region=REGION).run_in_thread() as running:
        client = make_lambda_client(running.endpoint_url)
        _, first = invoke_json(client, "first")
        _, second = invoke_json(client, "second")
        assert Path(first["scratch"]).read_bytes() == b"scratch"

    assert first["tmp"] == first["TMPDIR"]
    assert first["tmp"] != second["tmp"]
    assert Path(first["tmp"]) != Path(tempfile.gettempdir())  # a private folder, not the shared one
    assert Path(first["scratch"]).parent == Path(first["tmp"])
    assert not Path(first["tmp"]).exists()
    assert not Path(second["scratch"]).exists()


def test_lambdas_home_and_working_directory(make_function: FunctionMaker, lambda_client: Any) -> None:
    folder = make_function("reporter", REPORTER)

    _, payload = invoke_json(lambda_client, "reporter")

    assert payload["HOME"] is None  # Lambda leaves it unset
    assert payload["PWD"] == payload["cwd"] == str(folder)


@pytest.mark.skipif(os.geteuid() != 0, reason="handlers change user only when the runtime runs as root")
def test_a_root_runtime_runs_handlers_as_an_unprivileged_user_over_a_read_only_folder(
    make_function: FunctionMaker, lambda_client: Any
) -> None:
    import pwd

    folder = make_function("reporter", REPORTER)

    first, payload = invoke_json(lambda_client, "reporter")
    _, again = invoke_json(lambda_client, "reporter")

    assert "FunctionError" not in first, payload
    assert payload["uid"] == payload["euid"] == pwd.getpwnam(SANDBOX_USER).pw_uid != 0
    assert payload["wrote_code_folder"] == "PermissionError"
    assert not (folder / "written.txt").exists()
    assert os.stat(payload["tmp"]).st_uid == payload["uid"]
    assert again["uid"] == payload["uid"]


@pytest.mark.skipif(os.geteuid() != 0, reason="handlers change user only when the runtime runs as root")
def test_a_non_root_handler_still_reads_a_folder_only_root_can_enter(
    make_function: FunctionMaker, lambda_client: Any, functions_dir: Path
) -> None:
    # A functions folder (or an interpreter, as under pyenv's /root) only root may enter.
    folder = make_function("importer", IMPORTER)
    (folder / "helper.py").write_text("ANSWER = 42\n")
    functions_dir.chmod(0o700)
    folder.chmod(0o700)

    response, payload = invoke_json(lambda_client, "importer", {"module": "helper"})

    assert "FunctionError" not in response, payload
    assert payload["file"] == str(folder / "helper.py")
