"""The record path's floor: the minimal gateway, the record floor and the module, side by side in one run.

    .venv/bin/python bench/floor_compare.py [--rounds 8] [--seconds 3] [--callers 16] [--no-fdatasync-floor]
        [--out bench/results]

The module's record path writes every invocation's start before Lambda is called and its outcome durably before
the answer, and ships both to the database (README: "The record path"); its speed is judged against the minimal
gateway's calls/s over gRPC. `gateway_compare/record_floor.py` is the minimal gateway with that record path and
nothing else, as cheap as this project knows how to make it: what it reaches of the minimal gateway is about as far
as the module's design can go while it keeps that record. All three serve gRPC, against one embedded runtime, with
the echo function; rounds alternate, the order rotated each round. The figures are each server's calls/s over the
minimal gateway's, round by round (the median, the lowest, the highest), its server CPU per call and latencies. The
floor and the module log to databases of their own (beside BENCH_DATABASE_URL's on PostgreSQL, else SQLite files).
`--no-fdatasync-floor` adds the floor without its fdatasync, to show what durability costs it. A floor that fails,
or whose table lacks a row for a call it was sent, fails the run. Every child ends with it, the databases it made are
dropped, and the JSON goes to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path[:0] = [str(BENCH_DIR), str(ROOT)]

from gateway_compare.callers import GrpcPath  # noqa: E402
from gateway_compare.children import ChildFailed, child_environment, free_ports, spawn  # noqa: E402
from gateway_compare.paired import (  # noqa: E402
    WARMUP_CALLS,
    Contender,
    Databases,
    add_load_arguments,
    check_load_arguments,
    database_name,
    echo_runtime,
    figures,
    open_measure_close,
    ratio,
    servers_stopped_after,
    write_result,
)
from gateway_compare.servers import (  # noqa: E402
    DUMMY_AWS,
    ECHO,
    Server,
    start_minimal_gateway,
    start_module,
    wait_until_serving,
)

RESULTS_DIR = BENCH_DIR / "results"
THREADS = 64
# Journal bytes a record floor writes per second of load, with room to spare (about 1 KB a call, under 1,000 calls/s).
MB_PER_SECOND = 4
LABELS = {
    "minimal": "minimal gateway",
    "floor": "record floor",
    "floor_no_fdatasync": "record floor, no fdatasync",
    "module": "this module",
}


@dataclass
class Gateway(Contender):
    """One server of the comparison; for a record floor, what its table held after."""

    # Rows in a record floor's table once it stopped, beside the calls it was sent; its log's end if it failed.
    recorded: int | None = None
    log_tail: str = ""


def start_record_floor(
    scratch: Path, lambda_url: str, database_url: str, name: str, *, fdatasync: bool, load_seconds: float
) -> Server:
    """bench/gateway_compare/record_floor.py in a process of its own; its journal and table files under `scratch`,
    the journal zero-filled for `load_seconds` of load."""
    (grpc_port,) = free_ports(1)
    folder = scratch / name
    folder.mkdir()
    env = child_environment({**DUMMY_AWS, "PYTHONPATH": os.pathsep.join([str(BENCH_DIR), str(ROOT)])})
    command = [sys.executable, "-m", "gateway_compare.record_floor", "--endpoint-url", lambda_url]
    command += ["--port", str(grpc_port), "--threads", str(THREADS), "--journal", str(folder / "journal")]
    command += ["--database-url", database_url, "--zeroed-mb", str(max(8, math.ceil(load_seconds * MB_PER_SECOND)))]
    command += [] if fdatasync else ["--no-fdatasync"]
    child = spawn(name, command, cwd=ROOT, env=env, log_path=scratch / f"{name}.log")
    return Server(child, f"127.0.0.1:{grpc_port}")


def render(result: dict[str, Any]) -> str:
    lines = [
        f"gRPC, {result['callers']} callers, {result['function']}: {result['rounds']} rounds of "
        f"{result['seconds']:g} s per server, rotated; logs in {result['database']}",
        f"  {'server':<28} {'calls/s':>8} {'xminimal':>8} {'lowest':>7} {'highest':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'CPU ms/call':>11} {'idle':>5} {'errors':>6}",
    ]
    for key, server in result["servers"].items():
        over = result["over_minimal"].get(key)
        ratios = ("-", "-", "-") if over is None else tuple(f"{over[name]:.3f}" for name in _RATIO_NAMES)
        cpu = server["server_cpu_ms_per_call"]
        lines.append(
            f"  {server['label']:<28} {server['calls_per_s_median']:>8,.1f} {ratios[0]:>8} {ratios[1]:>7} "
            f"{ratios[2]:>7} {server['p50_ms']:>7.2f} {server['p99_ms']:>7.2f} "
            f"{'-' if cpu is None else f'{cpu:.2f}':>11} {server['idle_share']:>5.0%} {server['errors']:>6}"
        )
    lines.append("xminimal: calls/s over the minimal gateway's, the median of the rounds (lowest, highest)")
    return "\n".join(lines)


_RATIO_NAMES = ("calls_per_s_median", "calls_per_s_lowest", "calls_per_s_highest")


def run(arguments: argparse.Namespace) -> dict[str, Any]:
    keys = ["minimal", "floor", *(["floor_no_fdatasync"] if arguments.no_fdatasync_floor else []), "module"]
    gateways = [Gateway(key, LABELS[key]) for key in keys]
    with (
        tempfile.TemporaryDirectory(prefix="floor-compare-") as scratch_name,
        Databases(Path(scratch_name), "floor") as databases,
    ):
        scratch = Path(scratch_name)
        with echo_runtime(scratch, arguments.callers) as runtime, servers_stopped_after(list(gateways)):
            for gateway in gateways:
                if gateway.key != "minimal":
                    gateway.database_url = databases.make(gateway.key)
                gateway.server = _start(gateway, scratch, runtime.endpoint_url, arguments)
            for gateway in gateways:
                assert gateway.server is not None
                wait_until_serving(gateway.server)
                token_in = "metadata" if gateway.key == "module" else None
                gateway.path = GrpcPath(gateway.key, gateway.label, gateway.server, token_in)
            asyncio.run(
                open_measure_close(list(gateways), ECHO, arguments.callers, arguments.rounds, arguments.seconds)
            )
        # Stopped, the floors have shipped everything they answered: each says how many rows it wrote.
        for gateway in gateways:
            if gateway.key.startswith("floor") and gateway.server is not None:
                gateway.recorded = _floor_rows(gateway.database_url)
                short = gateway.path is not None and gateway.recorded != gateway.path.invocations
                if short or "Traceback" in gateway.server.child.log_path.read_text(errors="replace"):
                    # Kept before the scratch folder goes: what went wrong in it.
                    gateway.log_tail = gateway.server.child.log_tail()
    minimal = gateways[0]
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "function": ECHO,
        "callers": arguments.callers,
        "rounds": arguments.rounds,
        "seconds": arguments.seconds,
        "database": databases.description,
        "servers": {
            gateway.key: {
                **figures(gateway),
                "database": database_name(gateway),
                "invoked": gateway.path.invocations if gateway.path is not None else 0,
                **({"recorded": gateway.recorded} if gateway.recorded is not None else {}),
                **({"log_tail": gateway.log_tail} if gateway.log_tail else {}),
            }
            for gateway in gateways
        },
        "over_minimal": {gateway.key: ratio(gateway, minimal) for gateway in gateways[1:]},
    }


def _floor_rows(database_url: str) -> int:
    """Rows in the record floor's table at `database_url` (PostgreSQL or a SQLite file)."""
    query = "SELECT COUNT(*) FROM floor_invocations"
    if database_url.startswith("sqlite://"):
        with contextlib.closing(sqlite3.connect(database_url.removeprefix("sqlite://"))) as connection:
            return int(connection.execute(query).fetchone()[0])
    import psycopg2

    with contextlib.closing(psycopg2.connect(database_url)) as connection, connection.cursor() as cursor:
        cursor.execute(query)
        row = cursor.fetchone()
        return int(row[0]) if row else 0


def _start(gateway: Gateway, scratch: Path, lambda_url: str, arguments: argparse.Namespace) -> Server:
    if gateway.key == "minimal":
        return start_minimal_gateway(scratch, lambda_url, THREADS)
    if gateway.key == "module":
        return start_module(scratch, lambda_url, gateway.database_url, max_in_flight=4 * arguments.callers)
    return start_record_floor(
        scratch,
        lambda_url,
        gateway.database_url,
        gateway.key,
        fdatasync=gateway.key == "floor",
        # The rounds, and the warm-up's calls at a pessimistic 100 calls/s.
        load_seconds=arguments.rounds * arguments.seconds + WARMUP_CALLS / 100,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_load_arguments(parser, RESULTS_DIR)
    parser.add_argument("--no-fdatasync-floor", action="store_true", help="add the floor without its fdatasync")
    arguments = parser.parse_args(argv)
    check_load_arguments(parser, arguments)
    try:
        result = run(arguments)
    except ChildFailed as error:
        print(f"floor_compare: a server did not start: {error}", file=sys.stderr)
        return 2
    print(render(result))
    for server in result["servers"].values():
        if "recorded" in server:
            print(f"{server['label']}: {server['invoked']:,} calls sent, {server['recorded']:,} rows in its table")
    out_path = write_result(result, arguments.out, "floor")
    print(f"written to {out_path}")
    # A floor that failed, or did not keep its whole record, measured less than the record path: not a floor.
    failed = [server for server in result["servers"].values() if server.get("log_tail")]
    for server in failed:
        print(f"floor_compare: {server['label']} failed or lost rows; its log ends:", file=sys.stderr)
        print(server["log_tail"], file=sys.stderr)
    errors = sum(server["errors"] for server in result["servers"].values())
    return 1 if errors or failed else 0


if __name__ == "__main__":
    sys.exit(main())
