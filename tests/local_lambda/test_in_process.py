"""The runtime started and stopped from the caller's own event loop."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from botocore.exceptions import ConnectionClosedError

from local_lambda import LocalLambdaRuntime
from tests.local_lambda.conftest import FunctionMaker, make_lambda_client, wait_for

PID_HANDLER = "import os\n\ndef lambda_handler(event, context):\n    return os.getpid()\n"


def _running(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


async def test_start_and_stop_from_async_code(functions_dir: Path, make_function: FunctionMaker) -> None:
    make_function("pid", PID_HANDLER)
    runtime = LocalLambdaRuntime(functions_dir, port=0)
    await runtime.start()
    try:
        assert runtime.port != 0
        assert runtime.endpoint_url == f"http://127.0.0.1:{runtime.port}"
        client = make_lambda_client(runtime.endpoint_url)
        # boto3 blocks, so it runs on a thread while this loop serves the request.
        response = await asyncio.to_thread(client.invoke, FunctionName="pid", Payload=b"{}")
        worker_pid = json.loads(response["Payload"].read())
        assert runtime.worker_pids("pid") == [worker_pid]
    finally:
        await runtime.stop()

    assert not _running(worker_pid)  # stop() ends the workers


async def test_stop_ends_invocations_in_progress(
    functions_dir: Path, make_function: FunctionMaker, exchange_dir: Path
) -> None:
    make_function(
        "stuck",
        "import os, time\n\ndef lambda_handler(event, context):\n"
        "    open(event['pidfile'], 'w').write(str(os.getpid()))\n    time.sleep(60)\n",
        timeout=60,
    )
    pidfile = exchange_dir / "stuck.pid"
    async with LocalLambdaRuntime(functions_dir, port=0) as runtime:
        client = make_lambda_client(runtime.endpoint_url)
        call = asyncio.create_task(
            asyncio.to_thread(client.invoke, FunctionName="stuck", Payload=json.dumps({"pidfile": str(pidfile)}))
        )
        await asyncio.to_thread(wait_for, lambda: pidfile.exists() and pidfile.read_text() != "", "the handler")
        worker_pid = int(pidfile.read_text())

    assert not _running(worker_pid)
    with pytest.raises(ConnectionClosedError):  # the caller's connection was closed without an answer
        await asyncio.wait_for(call, 10)
