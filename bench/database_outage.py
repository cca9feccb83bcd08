"""The database cut away under load: do calls slow down, is any record lost or doubled?

Runs the module against the embedded runtime with PostgreSQL behind a TCP proxy on loopback, drives gRPC calls
from a few callers, and cuts the database away mid-run (connections refused, then swallowed), then gives it
back. Prints per phase the call latencies, and after the journal has drained, how many answered invocations
have no row, or more than one.

    BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench .venv/bin/python bench/database_outage.py

It uses a database of its own (created, then dropped); never point it at a database that matters.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import psycopg2  # noqa: E402

from local_lambda import RuntimeProcess  # noqa: E402
from proto import lambda_action_pb2 as pb  # noqa: E402
from proto import lambda_action_pb2_grpc as pb_grpc  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.tcp_proxy import TcpProxy  # noqa: E402

CLIENT_ID, CLIENT_SECRET = "outage-bench", "outage-bench-secret-0123"
DATABASE = "lambda_action_outage_bench"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=8)
    parser.add_argument("--before", type=float, default=10.0, help="seconds with the database up")
    parser.add_argument("--refused", type=float, default=10.0, help="seconds with connections refused")
    parser.add_argument("--blackhole", type=float, default=10.0, help="seconds with traffic swallowed")
    parser.add_argument("--after", type=float, default=10.0, help="seconds with the database back")
    arguments = parser.parse_args()
    admin_url = os.environ.get("BENCH_DATABASE_URL")
    if not admin_url:
        print("set BENCH_DATABASE_URL to a PostgreSQL server (a database of its own is created there)")
        return 2
    match = re.match(r"postgres(?:ql)?://([^@]*)@([^:/]+):?(\d+)?/", admin_url)
    if match is None:
        print("BENCH_DATABASE_URL must look like postgresql://user@host:5432/db")
        return 2
    user, host, port = match.group(1), match.group(2), int(match.group(3) or 5432)
    _recreate_database(admin_url)
    workdir = Path(tempfile.mkdtemp(prefix="outage-bench-"))
    proxy = TcpProxy((host, port))
    runtime = None
    module = None
    try:
        runtime = RuntimeProcess.start(_functions(workdir), "127.0.0.1", 0, "us-east-1", 15.0, "WARNING")
        rest_port, grpc_port = free_port(), free_port()
        module = _start_module(
            workdir,
            runtime.endpoint_url,
            f"postgresql://{user}@127.0.0.1:{proxy.port}/{DATABASE}",
            rest_port,
            grpc_port,
        )
        token = _token(rest_port)
        phases = [
            ("database up", arguments.before, proxy.restore),
            ("connections refused", arguments.refused, proxy.refuse),
            ("traffic swallowed", arguments.blackhole, proxy.blackhole),
            ("database back", arguments.after, proxy.restore),
        ]
        results = asyncio.run(_drive(f"127.0.0.1:{grpc_port}", token, arguments.callers, phases))
        drained = _wait_drained(rest_port, 120)
        rows = _rows(admin_url)
    finally:
        if module is not None:
            module.send_signal(signal.SIGTERM)
            try:
                module.wait(60)
            except subprocess.TimeoutExpired:
                module.kill()
        if runtime is not None:
            runtime.stop()
        proxy.close()
        shutil.rmtree(workdir, ignore_errors=True)
    answered = [invocation_id for phase in results for invocation_id in phase["ids"]]
    counts: dict[str, int] = {}
    for invocation_id in rows:
        counts[invocation_id] = counts.get(invocation_id, 0) + 1
    lost = [invocation_id for invocation_id in answered if invocation_id not in counts]
    doubled = [invocation_id for invocation_id, count in counts.items() if count > 1]
    print(f"{'phase':22s} {'calls':>7s} {'errors':>7s} {'p50 ms':>8s} {'p99 ms':>8s} {'max ms':>8s}")
    for phase in results:
        latencies = sorted(phase["latencies"])
        print(
            f"{phase['name']:22s} {len(latencies):7d} {phase['errors']:7d} {_pct(latencies, 50):8.1f} "
            f"{_pct(latencies, 99):8.1f} {latencies[-1] * 1000 if latencies else 0:8.1f}"
        )
    up_p99 = _pct(sorted(results[0]["latencies"]), 99)
    cut_max = max((max(p["latencies"], default=0) for p in results[1:3]), default=0) * 1000
    print(f"slowest call while cut: {cut_max:.1f} ms, {cut_max - up_p99:+.1f} ms against p99 with the database up")
    print(f"journal drained: {drained}; answered {len(answered)}, rows {len(rows)}", end="")
    print(f", lost {len(lost)}, doubled {len(doubled)}")
    _drop_database(admin_url)
    errors = sum(phase["errors"] for phase in results)
    return 0 if drained and not lost and not doubled and not errors else 1


async def _drive(target: str, token: str, callers: int, phases: list) -> list[dict]:
    results = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.LambdaActionStub(channel)
        metadata = [("authorization", f"Bearer {token}")]
        for name, seconds, turn in phases:
            turn()
            phase = {"name": name, "latencies": [], "ids": [], "errors": 0}
            end = time.monotonic() + seconds

            async def caller(phase: dict = phase, end: float = end) -> None:
                while time.monotonic() < end:
                    started = time.perf_counter()
                    try:
                        reply = await stub.InvokeFunction(
                            pb.InvokeFunctionRequest(function_name="waddlebot-echo", payload='{"n": 1}'),
                            metadata=metadata,
                            timeout=30,
                        )
                    except grpc.aio.AioRpcError:
                        phase["errors"] += 1
                        continue
                    phase["latencies"].append(time.perf_counter() - started)
                    phase["ids"].append(reply.invocation_id)

            await asyncio.gather(*(caller() for _ in range(callers)))
            results.append(phase)
    return results


def _functions(workdir: Path) -> Path:
    functions = workdir / "functions"
    shutil.copytree(
        ROOT / "functions" / "waddlebot-echo",
        functions / "waddlebot-echo",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    manifest_path = functions / "waddlebot-echo" / "function.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["concurrency"] = 64
    manifest_path.write_text(json.dumps(manifest))
    return functions


def _start_module(workdir: Path, lambda_url: str, database_url: str, rest_port: int, grpc_port: int):
    environment = {
        **os.environ,
        "LAMBDA_BACKEND": "aws",
        "AWS_ENDPOINT_URL_LAMBDA": lambda_url,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "MODULE_SECRET_KEY": "outage-bench-key-" + "k" * 48,
        "BOOTSTRAP_CLIENT_ID": CLIENT_ID,
        "BOOTSTRAP_CLIENT_SECRET": CLIENT_SECRET,
        "DATABASE_URL": database_url,
        "REST_PORT": str(rest_port),
        "GRPC_PORT": str(grpc_port),
        "HOST": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
        "LOG_DIR": str(workdir / "logs"),
        "LOG_SPOOL_DIR": str(workdir / "spool"),
        "MAX_CONCURRENT_REQUESTS": "200",
    }
    module = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=environment)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/health", timeout=2):
                return module
        except OSError:
            time.sleep(0.2)
    module.kill()
    raise RuntimeError("the module did not start")


def _token(rest_port: int) -> str:
    request = urllib.request.Request(
        f"http://127.0.0.1:{rest_port}/api/v1/token",
        data=json.dumps({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["token"]


def _wait_drained(rest_port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/health", timeout=5) as response:
            if json.load(response)["journal"]["unshipped_bytes"] == 0:
                return True
        time.sleep(0.5)
    return False


def _recreate_database(admin_url: str) -> None:
    _drop_database(admin_url)
    connection = psycopg2.connect(admin_url)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {DATABASE}")
    connection.close()


def _drop_database(admin_url: str) -> None:
    connection = psycopg2.connect(admin_url)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    connection.close()


def _rows(admin_url: str) -> list[str]:
    connection = psycopg2.connect(re.sub(r"/[^/]+$", f"/{DATABASE}", admin_url))
    with connection.cursor() as cursor:
        cursor.execute("SELECT invocation_id FROM lambda_invocations WHERE completed_at IS NOT NULL")
        found = [row[0] for row in cursor.fetchall()]
    connection.close()
    return found


def _pct(values: list[float], percent: int) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(len(values) * percent / 100))] * 1000


if __name__ == "__main__":
    sys.exit(main())
