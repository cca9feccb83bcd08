"""Benchmark of the embedded Lambda runtime: warm round trips, cold starts, throughput, and a subprocess per call.

    .venv/bin/python bench/local_lambda_bench.py [--calls 1000] [--seconds 2]

It copies the repository's functions/ into a temporary folder, starts `python -m local_lambda` on a free port
(as the gateway does, so client and runtime do not share a GIL), and calls it through boto3.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

from local_lambda import RuntimeProcess  # noqa: E402

ECHO = "waddlebot-echo"
COMMANDS = "waddlebot-command-handler"
EVENT = {"command": "!help", "user": "john"}


def lambda_client(endpoint_url: str) -> Any:
    return boto3.client(
        "lambda",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(retries={"total_max_attempts": 1}, max_pool_connections=64),
    )


def timed(call: Callable[[], Any], count: int) -> list[float]:
    """Milliseconds of `count` sequential calls."""
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)

    def at(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    return (
        f"p50 {at(0.50):6.2f} ms   p90 {at(0.90):6.2f} ms   p99 {at(0.99):6.2f} ms   "
        f"mean {statistics.fmean(ordered):6.2f} ms   (n={len(ordered)})"
    )


def warm_round_trips(endpoint_url: str, calls: int) -> None:
    client = lambda_client(endpoint_url)
    payload = json.dumps(EVENT).encode()

    def invoke() -> None:
        client.invoke(FunctionName=ECHO, Payload=payload)["Payload"].read()

    timed(invoke, 50)  # warm the worker and the connection
    print(f"warm invoke, boto3           {summary(timed(invoke, calls))}")

    host, port = endpoint_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port))
    path = f"/2015-03-31/functions/{ECHO}/invocations"

    def raw() -> None:
        connection.request("POST", path, body=payload, headers={"Content-Type": "application/json"})
        connection.getresponse().read()

    timed(raw, 50)
    print(f"warm invoke, raw HTTP        {summary(timed(raw, calls))}")
    connection.close()


def cold_starts(endpoint_url: str, functions_dir: Path, samples: int) -> None:
    client = lambda_client(endpoint_url)
    handler = functions_dir / COMMANDS / "handler.py"
    source = handler.read_text()
    round_trips, init_durations = [], []
    for number in range(samples):
        # An edit retires the warm worker: the next call starts a new one and imports the handler afresh.
        handler.write_text(f"{source}\n# edit {number}\n")
        started = time.perf_counter()
        response = client.invoke(FunctionName=COMMANDS, Payload=json.dumps(EVENT), LogType="Tail")
        response["Payload"].read()
        round_trips.append((time.perf_counter() - started) * 1000)
        match = re.search(r"Init Duration: ([\d.]+) ms", base64.b64decode(response["LogResult"]).decode())
        if match:
            init_durations.append(float(match.group(1)))
    handler.write_text(source)
    print(f"cold start, invoke           {summary(round_trips)}")
    if init_durations:
        print(f"cold start, worker init      {summary(init_durations)}")


def first_invoke_after_start(functions_dir: Path, samples: int) -> None:
    round_trips = []
    for _ in range(samples):
        with RuntimeProcess.start(functions_dir, port=0, log_level="WARNING", stdout=subprocess.DEVNULL) as runtime:
            client = lambda_client(runtime.endpoint_url)
            client.list_functions(MaxItems=1)  # connect first: measure the function, not the TCP handshake
            started = time.perf_counter()
            client.invoke(FunctionName=ECHO, Payload=json.dumps(EVENT))["Payload"].read()
            round_trips.append((time.perf_counter() - started) * 1000)
    print(f"first invoke after start     {summary(round_trips)}")


def throughput(endpoint_url: str, callers: int, seconds: float) -> None:
    counts = {"ok": 0, "throttled": 0}
    lock = threading.Lock()
    deadline: list[float] = []
    # The clock starts once every caller has its client and connection ready.
    ready = threading.Barrier(callers + 1, action=lambda: deadline.append(time.perf_counter() + seconds))

    def caller() -> None:
        client = lambda_client(endpoint_url)
        payload = json.dumps(EVENT).encode()
        with contextlib.suppress(client.exceptions.TooManyRequestsException):
            client.invoke(FunctionName=ECHO, Payload=payload)["Payload"].read()
        ok = throttled = 0
        ready.wait()
        while time.perf_counter() < deadline[0]:
            try:
                client.invoke(FunctionName=ECHO, Payload=payload)["Payload"].read()
                ok += 1
            except client.exceptions.TooManyRequestsException:
                throttled += 1
        with lock:
            counts["ok"] += ok
            counts["throttled"] += throttled

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for thread in threads:
        thread.start()
    ready.wait()
    for thread in threads:
        thread.join()
    line = f"throughput, {callers} boto3 thread(s)  {counts['ok'] / seconds:7.0f} invocations/s"
    if counts["throttled"]:
        line += f"   (+{counts['throttled'] / seconds:.0f}/s answered 429: the runtime's concurrency limit)"
    print(line)


def _process_caller(endpoint_url: str, start_at: float, seconds: float) -> tuple[int, int]:
    """One client process: sequential calls from `start_at` (wall clock) for `seconds`; (ok, throttled)."""
    client = lambda_client(endpoint_url)
    payload = json.dumps(EVENT).encode()
    with contextlib.suppress(client.exceptions.TooManyRequestsException):
        client.invoke(FunctionName=ECHO, Payload=payload)["Payload"].read()
    time.sleep(max(0.0, start_at - time.time()))
    ok = throttled = 0
    while time.time() < start_at + seconds:
        try:
            client.invoke(FunctionName=ECHO, Payload=payload)["Payload"].read()
            ok += 1
        except client.exceptions.TooManyRequestsException:
            throttled += 1
    return ok, throttled


def throughput_processes(endpoint_url: str, processes: int, seconds: float) -> None:
    """Callers in separate processes, so that the client's own GIL is not what is measured."""
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        start_at = time.time() + 3.0  # time for every process to start and import boto3
        results = pool.starmap(_process_caller, [(endpoint_url, start_at, seconds)] * processes)
    ok = sum(result[0] for result in results)
    throttled = sum(result[1] for result in results)
    line = f"throughput, {processes} boto3 processes {ok / seconds:7.0f} invocations/s"
    if throttled:
        line += f"   (+{throttled / seconds:.0f}/s answered 429)"
    print(line)


def subprocess_per_call(functions_dir: Path, samples: int) -> None:
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import handler; "
        "print(json.dumps(handler.lambda_handler(json.loads(sys.argv[2]), None)))"
    )
    folder = str(functions_dir / COMMANDS)

    def run() -> None:
        subprocess.run([sys.executable, "-c", code, folder, json.dumps(EVENT)], check=True, capture_output=True)

    print(f"subprocess per call          {summary(timed(run, samples))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="sequential warm calls (default 1000)")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per throughput run (default 2)")
    args = parser.parse_args()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="local-lambda-bench-") as scratch:
        functions_dir = Path(scratch) / "functions"
        shutil.copytree(REPOSITORY / "functions", functions_dir, ignore=shutil.ignore_patterns("__pycache__"))
        print(f"python {sys.version.split()[0]}, {_cpu_count()} CPUs; runtime in a child process\n")
        with RuntimeProcess.start(functions_dir, port=0, log_level="WARNING", stdout=subprocess.DEVNULL) as runtime:
            warm_round_trips(runtime.endpoint_url, args.calls)
            cold_starts(runtime.endpoint_url, functions_dir, samples=10)
            for callers in (1, 2, 4, 8):
                throughput(runtime.endpoint_url, callers, args.seconds)
            for processes in (2, 4):
                throughput_processes(runtime.endpoint_url, processes, args.seconds)
        first_invoke_after_start(functions_dir, samples=3)
        subprocess_per_call(functions_dir, samples=20)
    print(f"\n(benchmark took {time.perf_counter() - began:.0f} s)")


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


if __name__ == "__main__":
    main()
