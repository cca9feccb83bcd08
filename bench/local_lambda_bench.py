"""Benchmark of the embedded Lambda runtime: warm round trips, cold starts, throughput, and a process per call.

    .venv/bin/python bench/local_lambda_bench.py [--calls 1000] [--seconds 2] [--smoke] [--json PATH]

It copies the repository's functions/ into a temporary folder, starts `python -m local_lambda` on a free port
(as the gateway does, so client and runtime do not share a GIL), and calls it through boto3. For comparison it
runs the same handler with the same event through python-lambda-local (a new process per call), when that is
installed, and through a bare subprocess. `--smoke` runs every row briefly; `--json` also writes the figures.
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
from dataclasses import dataclass, field
from importlib.util import find_spec
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
# Every process the benchmark starts for one call is given this long before it is stopped.
PROCESS_TIMEOUT_SECONDS = 60
LABEL_WIDTH = 29


@dataclass
class Results:
    """What the run measured, printed as it goes and kept for --json."""

    rows: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def latency(self, label: str, samples: list[float]) -> None:
        print(f"{label:<{LABEL_WIDTH}}{summary(samples)}")
        self.rows[label] = figures(samples)

    def rate(self, label: str, per_second: float, remark: str = "") -> None:
        print(f"{label:<{LABEL_WIDTH}}{per_second:7.0f} invocations/s{remark}")
        self.rows[label] = {"per_second": per_second}

    def note(self, text: str) -> None:
        print(text)
        self.notes.append(text)


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


def figures(samples: list[float]) -> dict[str, float]:
    """p50, p90, p99 and mean of a list of milliseconds, and how many there were."""
    ordered = sorted(samples)

    def at(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "mean": statistics.fmean(ordered), "n": len(ordered)}


def summary(samples: list[float]) -> str:
    measured = figures(samples)
    return (
        f"p50 {measured['p50']:6.2f} ms   p90 {measured['p90']:6.2f} ms   p99 {measured['p99']:6.2f} ms   "
        f"mean {measured['mean']:6.2f} ms   (n={measured['n']})"
    )


def warm_round_trips(endpoint_url: str, calls: int, results: Results) -> None:
    client = lambda_client(endpoint_url)
    payload = json.dumps(EVENT).encode()

    def invoke() -> None:
        client.invoke(FunctionName=ECHO, Payload=payload)["Payload"].read()

    timed(invoke, 50)  # warm the worker and the connection
    results.latency("warm invoke, boto3", timed(invoke, calls))

    host, port = endpoint_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port))
    path = f"/2015-03-31/functions/{ECHO}/invocations"

    def raw() -> None:
        connection.request("POST", path, body=payload, headers={"Content-Type": "application/json"})
        connection.getresponse().read()

    timed(raw, 50)
    results.latency("warm invoke, raw HTTP", timed(raw, calls))
    connection.close()


def cold_starts(endpoint_url: str, functions_dir: Path, samples: int, results: Results) -> None:
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
    results.latency("after an edit, invoke", round_trips)
    if init_durations:
        results.latency("after an edit, worker init", init_durations)


def first_invoke_after_start(functions_dir: Path, samples: int, results: Results) -> None:
    round_trips = []
    for _ in range(samples):
        with RuntimeProcess.start(functions_dir, port=0, log_level="WARNING", stdout=subprocess.DEVNULL) as runtime:
            client = lambda_client(runtime.endpoint_url)
            client.list_functions(MaxItems=1)  # connect first: measure the function, not the TCP handshake
            started = time.perf_counter()
            client.invoke(FunctionName=ECHO, Payload=json.dumps(EVENT))["Payload"].read()
            round_trips.append((time.perf_counter() - started) * 1000)
    results.latency("first invoke after start", round_trips)


def throughput(endpoint_url: str, callers: int, seconds: float, results: Results) -> None:
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
    remark = ""
    if counts["throttled"]:
        remark = f"   (+{counts['throttled'] / seconds:.0f}/s answered 429: the runtime's concurrency limit)"
    results.rate(f"throughput, {callers} boto3 thread(s)", counts["ok"] / seconds, remark)


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


def throughput_processes(endpoint_url: str, processes: int, seconds: float, results: Results) -> None:
    """Callers in separate processes, so that the client's own GIL is not what is measured."""
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        start_at = time.time() + 3.0  # time for every process to start and import boto3
        counts = pool.starmap(_process_caller, [(endpoint_url, start_at, seconds)] * processes)
    ok = sum(count[0] for count in counts)
    throttled = sum(count[1] for count in counts)
    remark = f"   (+{throttled / seconds:.0f}/s answered 429)" if throttled else ""
    results.rate(f"throughput, {processes} boto3 processes", ok / seconds, remark)


def subprocess_per_call(functions_dir: Path, samples: int, results: Results) -> None:
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import handler; "
        "print(json.dumps(handler.lambda_handler(json.loads(sys.argv[2]), None)))"
    )
    folder = str(functions_dir / COMMANDS)

    def run() -> None:
        command = [sys.executable, "-c", code, folder, json.dumps(EVENT)]
        subprocess.run(command, check=True, capture_output=True, timeout=PROCESS_TIMEOUT_SECONDS)

    results.latency("subprocess per call", timed(run, samples))


def python_lambda_local_per_call(functions_dir: Path, scratch: Path, samples: int, results: Results) -> None:
    """The same handler and event through python-lambda-local's command line: a new process per call."""
    if find_spec("lambda_local") is None:
        results.note("python-lambda-local is not installed (pip install -r requirements-dev.txt): its row is left out")
        return
    event_file = scratch / "event.json"
    event_file.write_text(json.dumps(EVENT))
    command = [
        *(sys.executable, "-m", "lambda_local"),
        *("--function", "lambda_handler", "--timeout", "3"),
        *(str(functions_dir / COMMANDS / "handler.py"), str(event_file)),
    ]

    def run() -> None:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PROCESS_TIMEOUT_SECONDS)
        # It prints the handler's result after RESULT: (as a Python value) and exits 1 when the handler failed.
        if done.returncode != 0 or "'statusCode': 200" not in done.stdout:
            raise RuntimeError(f"python-lambda-local failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    try:
        run()  # once unmeasured, so that its files are in the page cache as the runtime's are
    except RuntimeError as error:
        last_line = str(error).strip().splitlines()[-1]
        results.note(f"python-lambda-local is installed but does not run ({last_line}): its row is left out")
        return
    results.latency("python-lambda-local per call", timed(run, samples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="sequential warm calls (default 1000)")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per throughput run (default 2)")
    parser.add_argument("--smoke", action="store_true", help="every row, briefly: a check that each still runs")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    calls, seconds = (20, 0.3) if args.smoke else (args.calls, args.seconds)
    cold_samples, first_samples, process_samples = (2, 1, 3) if args.smoke else (10, 3, 20)
    results = Results()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="local-lambda-bench-") as scratch:
        functions_dir = Path(scratch) / "functions"
        shutil.copytree(REPOSITORY / "functions", functions_dir, ignore=shutil.ignore_patterns("__pycache__"))
        print(f"python {sys.version.split()[0]}, {_cpu_count()} CPUs; runtime in a child process\n")
        with RuntimeProcess.start(functions_dir, port=0, log_level="WARNING", stdout=subprocess.DEVNULL) as runtime:
            warm_round_trips(runtime.endpoint_url, calls, results)
            cold_starts(runtime.endpoint_url, functions_dir, cold_samples, results)
            for callers in (1, 2, 4, 8):
                throughput(runtime.endpoint_url, callers, seconds, results)
            for processes in (2, 4):
                throughput_processes(runtime.endpoint_url, processes, seconds, results)
        first_invoke_after_start(functions_dir, first_samples, results)
        python_lambda_local_per_call(functions_dir, Path(scratch), process_samples, results)
        subprocess_per_call(functions_dir, process_samples, results)
    print(f"\n(benchmark took {time.perf_counter() - began:.0f} s)")
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": results.rows, "notes": results.notes}, indent=2) + "\n")


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


if __name__ == "__main__":
    main()
