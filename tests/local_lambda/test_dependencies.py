"""A function's requirements.txt, through real boto3: installed once into the cache, reused, rebuilt on change.

The wheels are built here by hand (a zip holding a module and its *.dist-info), so pip installs them offline.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import zipfile
from base64 import urlsafe_b64encode
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from local_lambda import LocalLambdaRuntime, RuntimeProcess, publish_version
from local_lambda.dependencies import REQUIREMENTS_FILE
from tests.local_lambda.conftest import REGION, FunctionMaker, invoke_json, make_lambda_client

USES_DEPENDENCY = """
import tinydep

def lambda_handler(event, context):
    return {"value": tinydep.VALUE, "file": tinydep.__file__}
"""


def build_wheel(folder: Path, version: str, value: str) -> Path:
    """A wheel of the module `tinydep` (VALUE = value), written into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"tinydep-{version}-py3-none-any.whl"
    info = f"tinydep-{version}.dist-info"
    files = {
        "tinydep/__init__.py": f"VALUE = {value!r}\n".encode(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: tinydep\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: by-hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, content in files.items():
        digest = urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(content)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(path, "w") as wheel:
        for name, content in files.items():
            wheel.writestr(name, content)
    return path


def folder_state(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `folder`: its size and modification time."""
    return {str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns) for path in folder.rglob("*")}


def installs(caplog: pytest.LogCaptureFixture) -> int:
    return sum("installing requirements.txt" in record.getMessage() for record in caplog.records)


def test_requirements_are_installed_outside_the_folder_and_reused(
    make_function: FunctionMaker, lambda_client: Any, cache_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="local_lambda")
    wheel = build_wheel(tmp_path / "wheels", "1.0", "first")
    folder = make_function("user", USES_DEPENDENCY)
    (folder / REQUIREMENTS_FILE).write_text(f"{wheel}\n")
    before = folder_state(folder)

    _, first = invoke_json(lambda_client, "user")
    [installed] = [path for path in (cache_dir / "dependencies").iterdir() if path.is_dir()]
    installed_at = installed.stat().st_mtime_ns
    (folder / "handler.py").write_text(USES_DEPENDENCY + "\n# edited: a cold start\n")
    _, second = invoke_json(lambda_client, "user")

    assert first["value"] == second["value"] == "first"
    assert Path(first["file"]).is_relative_to(installed)
    assert installs(caplog) == 1  # the cold start after the edit ran no pip
    assert installed.stat().st_mtime_ns == installed_at
    after = folder_state(folder)
    del after["handler.py"], before["handler.py"]
    assert after == before  # nothing written into the function's folder


def test_changed_requirements_are_installed_afresh(
    make_function: FunctionMaker, lambda_client: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="local_lambda")
    folder = make_function("user", USES_DEPENDENCY)
    (folder / REQUIREMENTS_FILE).write_text(f"{build_wheel(tmp_path / 'one', '1.0', 'first')}\n")
    _, first = invoke_json(lambda_client, "user")

    (folder / REQUIREMENTS_FILE).write_text(f"{build_wheel(tmp_path / 'two', '2.0', 'second')}\n")
    _, second = invoke_json(lambda_client, "user")

    assert (first["value"], second["value"]) == ("first", "second")
    assert installs(caplog) == 2


def test_a_restarted_runtime_reuses_the_cache(
    make_function: FunctionMaker, functions_dir: Path, cache_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="local_lambda")
    folder = make_function("user", USES_DEPENDENCY)
    (folder / REQUIREMENTS_FILE).write_text(f"{build_wheel(tmp_path / 'wheels', '1.0', 'first')}\n")

    answers = []
    for _ in range(2):
        with LocalLambdaRuntime(functions_dir, port=0, region=REGION, cache_dir=cache_dir).run_in_thread() as running:
            answers.append(invoke_json(make_lambda_client(running.endpoint_url), "user")[1]["value"])

    assert answers == ["first", "first"]
    assert installs(caplog) == 1


def test_concurrent_cold_starts_install_once(
    make_function: FunctionMaker, lambda_client: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="local_lambda")
    folder = make_function("user", USES_DEPENDENCY, concurrency=4)
    (folder / REQUIREMENTS_FILE).write_text(f"{build_wheel(tmp_path / 'wheels', '1.0', 'first')}\n")

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: invoke_json(lambda_client, "user")[1]["value"], range(4)))

    assert answers == ["first"] * 4
    assert installs(caplog) == 1


def test_a_failed_install_is_a_conflict_quoting_pip(
    make_function: FunctionMaker, lambda_client: Any, tmp_path: Path
) -> None:
    folder = make_function("user", USES_DEPENDENCY)
    missing = tmp_path / "wheels" / "tinydep-9.0-py3-none-any.whl"
    (folder / REQUIREMENTS_FILE).write_text(f"{missing}\n")
    before = folder_state(folder)

    with pytest.raises(lambda_client.exceptions.ResourceConflictException) as raised:
        lambda_client.invoke(FunctionName="user", Payload=b"{}")

    error: botocore.exceptions.ClientError = raised.value
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    message = error.response["Error"]["Message"]
    assert message.startswith("user: pip could not install requirements.txt (exit status 1):\n")
    assert "does not exist" in message  # pip's own words, from its last lines
    assert folder_state(folder) == before


def test_published_versions_share_the_cache_rather_than_copy_it(
    make_function: FunctionMaker, lambda_client: Any, functions_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    folder = make_function("user", USES_DEPENDENCY)
    (folder / REQUIREMENTS_FILE).write_text(f"{build_wheel(tmp_path / 'wheels', '1.0', 'first')}\n")
    _, latest = invoke_json(lambda_client, "user")

    version = publish_version(functions_dir, "user")
    _, published = invoke_json(lambda_client, "user", Qualifier=version)

    assert published == latest
    assert sorted(path.name for path in (folder / "versions" / version).iterdir()) == ["handler.py", REQUIREMENTS_FILE]
    assert len([path for path in (cache_dir / "dependencies").iterdir() if path.is_dir()]) == 1


def test_packages_vendored_into_the_folder_keep_working(
    make_function: FunctionMaker, lambda_client: Any, tmp_path: Path
) -> None:
    folder = make_function("user", USES_DEPENDENCY)
    wheel = build_wheel(tmp_path / "wheels", "1.0", "vendored")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-index"]
    subprocess.run([*pip, "--target", str(folder), str(wheel)], check=True, timeout=120)

    _, payload = invoke_json(lambda_client, "user")

    assert payload == {"value": "vendored", "file": str(folder / "tinydep" / "__init__.py")}


def test_requirements_are_installed_for_the_functions_own_python(
    make_function: FunctionMaker, lambda_client: Any, cache_dir: Path, tmp_path: Path
) -> None:
    from tests.local_lambda.test_interpreters import installed_interpreter

    if installed_interpreter("3.13") is None:
        pytest.skip("no python3.13 installed here")
    folder = make_function("user", USES_DEPENDENCY, runtime="python3.13")
    (folder / REQUIREMENTS_FILE).write_text(f"{build_wheel(tmp_path / 'wheels', '1.0', 'first')}\n")

    _, payload = invoke_json(lambda_client, "user")

    assert payload["value"] == "first"
    assert Path(payload["file"]).relative_to(cache_dir / "dependencies").parts[0].startswith("python3.13-")


def test_two_runtimes_on_one_cache_install_once(
    make_function: FunctionMaker, functions_dir: Path, cache_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="local_lambda")
    folder = make_function("user", USES_DEPENDENCY)
    (folder / REQUIREMENTS_FILE).write_text(f"{build_wheel(tmp_path / 'wheels', '1.0', 'first')}\n")
    first = LocalLambdaRuntime(functions_dir, port=0, region=REGION, cache_dir=cache_dir)
    second = LocalLambdaRuntime(functions_dir, port=0, region=REGION, cache_dir=cache_dir)

    with first.run_in_thread(), second.run_in_thread(), ThreadPoolExecutor(2) as pool:
        clients = [make_lambda_client(first.endpoint_url), make_lambda_client(second.endpoint_url)]
        answers = list(pool.map(lambda client: invoke_json(client, "user")[1]["value"], clients))

    assert answers == ["first", "first"]
    assert installs(caplog) == 1


def test_the_command_lines_cache_folder(make_function: FunctionMaker, functions_dir: Path, tmp_path: Path) -> None:
    folder = make_function("user", USES_DEPENDENCY)
    (folder / REQUIREMENTS_FILE).write_text(f"{build_wheel(tmp_path / 'wheels', '1.0', 'first')}\n")
    cache_dir = tmp_path / "elsewhere"

    with RuntimeProcess.start(functions_dir, port=0, cache_dir=cache_dir) as process:
        _, payload = invoke_json(make_lambda_client(process.endpoint_url), "user")

    assert Path(payload["file"]).is_relative_to(cache_dir / "dependencies")
