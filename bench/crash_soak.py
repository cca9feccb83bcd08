"""The module killed and stopped under load: is every answered invocation on record, and no record doubled?

    .venv/bin/python bench/crash_soak.py [--callers 8] [--seconds 4]

Two runs against the embedded runtime, with the module's log in SQLite in a folder of its own:

1. SIGKILL with calls in flight, then a restart on the same journal and database: every invocation a caller got
   an answer for has a completed row; the rest of what was running is recorded as Interrupted.
2. SIGTERM with calls in flight: every call is answered (or refused as the servers close), the module exits 0,
   and every answered invocation has a completed row.

Prints what it found; exits 1 when anything is missing. Part of `make soak`.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))

from database_outage import _functions, _start_module, _token, _wait_drained

from local_lambda import RuntimeProcess
from proto import lambda_action_pb2 as pb
from proto import lambda_action_pb2_grpc as pb_grpc
from tests.conftest import free_port


async def _load_until(target: str, token: str, callers: int, event: asyncio.Event) -> tuple[list[str], int]:
    """Calls from `callers` callers until `event` is set and each caller's last call has ended: answered ids, and
    how many calls ended without an answer."""
    answered: list[str] = []
    unanswered = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.LambdaActionStub(channel)
        metadata = [("authorization", f"Bearer {token}")]

        async def caller() -> None:
            nonlocal unanswered
            while not event.is_set():
                try:
                    reply = await stub.InvokeFunction(
                        pb.InvokeFunctionRequest(function_name="waddlebot-echo", payload='{"n": 1}'),
                        metadata=metadata,
                        timeout=30,
                    )
                except grpc.aio.AioRpcError:
                    unanswered += 1
                    await asyncio.sleep(0.05)
                    continue
                answered.append(reply.invocation_id)

        await asyncio.gather(*(caller() for _ in range(callers)))
    return answered, unanswered


async def _run_then_signal(target: str, token: str, callers: int, seconds: float, process, signum: int):
    stop = asyncio.Event()
    load = asyncio.ensure_future(_load_until(target, token, callers, stop))
    await asyncio.sleep(seconds)
    process.send_signal(signum)
    # Callers go on until the servers are gone: what they send after the signal is refused or unanswered.
    await asyncio.sleep(1.0)
    stop.set()
    return await load


def _rows(database: Path) -> dict[str, tuple]:
    with sqlite3.connect(database) as connection:
        return {
            row[0]: row[1:]
            for row in connection.execute("SELECT invocation_id, completed_at, error_code FROM lambda_invocations")
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds of load before each signal")
    arguments = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="crash-soak-"))
    database = workdir / "module.sqlite"
    runtime = None
    module = None
    problems: list[str] = []
    try:
        runtime = RuntimeProcess.start(_functions(workdir), "127.0.0.1", 0, "us-east-1", 15.0, "WARNING")
        rest_port, grpc_port = free_port(), free_port()
        target = f"127.0.0.1:{grpc_port}"

        def start():
            return _start_module(workdir, runtime.endpoint_url, f"sqlite:///{database}", rest_port, grpc_port)

        # 1. SIGKILL under load, then a restart on the same journal.
        module = start()
        answered, unanswered = asyncio.run(
            _run_then_signal(target, _token(rest_port), arguments.callers, arguments.seconds, module, signal.SIGKILL)
        )
        module.wait(30)
        module = start()
        drained = _wait_drained(rest_port, 60)
        rows = _rows(database)
        lost = [invocation_id for invocation_id in answered if not (rows.get(invocation_id) or (None,))[0]]
        interrupted = sum(1 for _, code in rows.values() if code == "Interrupted")
        incomplete = sum(1 for completed, _ in rows.values() if completed is None)
        print(
            f"SIGKILL under load: {len(answered)} answered, {unanswered} cut off; after the restart "
            f"{len(rows)} rows, {interrupted} Interrupted, {incomplete} never completed, "
            f"{len(lost)} answered without a completed row; journal drained: {drained}"
        )
        # At most one call per caller was running when the process died: only those can be Interrupted.
        if lost or incomplete or not drained or interrupted > arguments.callers:
            problems.append("SIGKILL run")

        # 2. SIGTERM under load: a drain within the grace.
        before = set(rows)
        answered, unanswered = asyncio.run(
            _run_then_signal(target, _token(rest_port), arguments.callers, arguments.seconds, module, signal.SIGTERM)
        )
        code = module.wait(60)
        module = None
        rows = _rows(database)
        lost = [invocation_id for invocation_id in answered if not (rows.get(invocation_id) or (None,))[0]]
        incomplete = sum(1 for completed, _ in rows.values() if completed is None)
        print(
            f"SIGTERM under load: {len(answered)} answered, {unanswered} refused while stopping; exit {code}; "
            f"{len(set(rows) - before)} new rows, {incomplete} never completed, "
            f"{len(lost)} answered without a completed row"
        )
        if lost or incomplete or code != 0:
            problems.append("SIGTERM run")
    finally:
        if module is not None and module.poll() is None:
            module.kill()
            module.wait()
        if runtime is not None:
            runtime.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    if problems:
        print(f"failed: {', '.join(problems)}")
        return 1
    return 0


if __name__ == "__main__":
    started = time.monotonic()
    status = main()
    print(f"done in {time.monotonic() - started:.0f} s")
    sys.exit(status)
