"""Paired rounds: one closed-loop load on each of a few servers in turn, every round recorded on its own.

`loads.run_paths` folds a path's rounds into one Run, which is what `make bench`'s tables need. A comparison of
two or three servers wants the rounds kept: these machines drift within a run, so the figure is the median of the
round-by-round ratios, with the lowest and the highest beside it to show the spread.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway_compare.callers import CallPath
from gateway_compare.loads import Run, run_load
from gateway_compare.servers import Server, drop_postgres_database, sibling_postgres_database, write_functions
from local_lambda import RuntimeProcess

# Unmeasured calls per server before the first round: connections, the runtime's workers, caches and threads.
WARMUP_CALLS = 200


@dataclass
class Contender:
    """One server of a comparison: what it is, its process, the database it logs to (if any), the path its callers
    take, and what each of its rounds measured."""

    key: str
    label: str
    database_url: str = ""
    server: Server | None = None
    path: CallPath | None = None
    rounds: list[Run] = field(default_factory=list)
    idle_shares: list[float] = field(default_factory=list)


@contextlib.contextmanager
def echo_runtime(scratch: Path, callers: int) -> Iterator[RuntimeProcess]:
    """The benchmark's functions on one embedded runtime, each allowed a worker per caller; stopped on the way out."""
    write_functions(scratch / "functions", concurrency=callers)
    with open(scratch / "runtime.log", "wb") as runtime_log:
        runtime = RuntimeProcess.start(
            scratch / "functions", port=0, log_level="WARNING", stdout=runtime_log, stderr=runtime_log
        )
    try:
        yield runtime
    finally:
        runtime.stop()


class Databases(contextlib.AbstractContextManager["Databases"]):
    """Where a comparison's servers log: databases of their own beside BENCH_DATABASE_URL's on PostgreSQL (dropped
    when the `with` block ends), else SQLite files in the scratch folder."""

    def __init__(self, scratch: Path, prefix: str) -> None:
        self.bench_url = os.environ.get("BENCH_DATABASE_URL") or None
        self._scratch = scratch
        self._prefix = prefix
        self._made: list[str] = []

    @property
    def description(self) -> str:
        return "PostgreSQL (BENCH_DATABASE_URL)" if self.bench_url else "SQLite"

    def make(self, key: str) -> str:
        """The URL of `key`'s database: `<bench database>_<prefix>_<key>`, or `<key>.sqlite`."""
        if not self.bench_url:
            return f"sqlite://{self._scratch / f'{key}.sqlite'}"
        url = sibling_postgres_database(self.bench_url, f"_{self._prefix}_{key}")
        self._made.append(url)
        return url

    def __exit__(self, *_: object) -> None:
        """Drop the PostgreSQL databases `make` made (SQLite files go with the scratch folder)."""
        if self.bench_url is None:
            return
        for url in self._made:
            drop_postgres_database(url, through=self.bench_url)


@contextlib.contextmanager
def servers_stopped_after(contenders: list[Contender]) -> Iterator[None]:
    """Stop every contender's server that was started when the block ends (SIGTERM, then SIGKILL if it lingers)."""
    try:
        yield
    finally:
        for contender in contenders:
            if contender.server is not None:
                contender.server.child.stop()


def database_name(contender: Contender) -> str | None:
    """The name of the contender's database, not its URL: a PostgreSQL URL may carry a password."""
    return Path(urllib.parse.urlsplit(contender.database_url).path).name or None


def idle_and_total() -> tuple[int, int]:
    """Idle and total jiffies of all cores since boot, from /proc/stat (idle counts iowait too)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return fields[3] + fields[4], sum(fields)


async def measure_rounds(contenders: list[Contender], function: str, callers: int, rounds: int, seconds: float) -> None:
    """`rounds` rounds of `callers` callers on each contender in turn, the order rotated each round."""
    for contender in contenders:
        assert contender.path is not None
        await run_load(contender.path, function, callers, calls=WARMUP_CALLS)
    for number in range(rounds):
        shift = number % len(contenders)
        for contender in [*contenders[shift:], *contenders[:shift]]:
            assert contender.path is not None
            idle_before, total_before = idle_and_total()
            contender.rounds.append(await run_load(contender.path, function, callers, seconds=seconds))
            idle_after, total_after = idle_and_total()
            contender.idle_shares.append((idle_after - idle_before) / max(1, total_after - total_before))


def figures(contender: Contender) -> dict[str, Any]:
    """A contender's figures over all its rounds: Run's summary, its median calls/s and the idle share of the cores."""
    total = Run()
    for run in contender.rounds:
        total.add(run)
    return {
        "label": contender.label,
        **total.summary(),
        "calls_per_s_median": round(statistics.median(run.calls_per_second for run in contender.rounds), 1),
        "idle_share": round(statistics.mean(contender.idle_shares), 3),
    }


def ratio(over: Contender, base: Contender) -> dict[str, Any]:
    """`over`'s calls/s divided by `base`'s, round by round: the median, the lowest, the highest, and each."""
    ratios = [
        mine.calls_per_second / theirs.calls_per_second if theirs.calls_per_second else 0.0
        for mine, theirs in zip(over.rounds, base.rounds, strict=True)
    ]
    return {
        "calls_per_s_median": round(statistics.median(ratios), 3),
        "calls_per_s_lowest": round(min(ratios), 3),
        "calls_per_s_highest": round(max(ratios), 3),
        "by_round": [round(value, 3) for value in ratios],
    }


async def open_measure_close(
    contenders: list[Contender], function: str, callers: int, rounds: int, seconds: float
) -> None:
    """Open every contender's path, measure the rounds, and close what was opened, whatever happens."""
    opened: list[CallPath] = []
    try:
        for contender in contenders:
            assert contender.path is not None
            await contender.path.open()
            opened.append(contender.path)
        await measure_rounds(contenders, function, callers, rounds, seconds)
    finally:
        for path in opened:
            await path.close()


def add_load_arguments(parser: argparse.ArgumentParser, results_dir: Path) -> None:
    """The options every comparison shares: --rounds, --seconds, --callers and --out."""
    parser.add_argument("--rounds", type=int, default=8, help="rounds per server (8)")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per round (3)")
    parser.add_argument("--callers", type=int, default=16, help="closed-loop callers (16)")
    parser.add_argument("--out", type=Path, default=results_dir, help="where the JSON result goes")


def check_load_arguments(parser: argparse.ArgumentParser, arguments: argparse.Namespace) -> None:
    """Refuse a load that could not measure anything, saying what to fix (argparse exits with 2)."""
    if arguments.rounds < 1 or arguments.seconds <= 0 or arguments.callers < 1:
        parser.error("--rounds and --callers must be at least 1, and --seconds more than 0")


def write_result(result: dict[str, Any], out: Path, prefix: str) -> Path:
    """The result as JSON in `out`, named `<prefix>-<time>.json`; where it went."""
    out.mkdir(parents=True, exist_ok=True)
    out_path = out / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    return out_path
