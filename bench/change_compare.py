"""A change measured side by side: the module as another revision has it, and as this checkout has it, in one run.

    .venv/bin/python bench/change_compare.py [--base REV | --base-dir PATH] [--rounds 8] [--seconds 3]
        [--callers 16] [--transport grpc|rest] [--function echo|sleep] [--out bench/results]

`make bench` says where the module stands against the other paths; this says what a change was worth. The base (HEAD
unless told, so by default the uncommitted change is what is measured) is checked out in a temporary git worktree,
or --base-dir names a checkout; both run with this checkout's Python and packages. Both modules run as `make bench`
runs the module, each with a database of its own (beside BENCH_DATABASE_URL's on PostgreSQL, else a SQLite file),
against one embedded runtime. Rounds of the same closed-loop load alternate between them, the order turned each
round, so that whatever else the machine does weighs on both alike. The figure is this checkout's calls/s over the
base's, round by round: the median, with the lowest and the highest; beside it each side's server CPU per call, its
latencies, and the share of both cores left idle. Every child ends with it; the worktree and the databases it made
are removed; the JSON goes to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path[:0] = [str(BENCH_DIR), str(ROOT)]

from gateway_compare.callers import CallPath, GrpcPath, RestPath  # noqa: E402
from gateway_compare.children import ChildFailed  # noqa: E402
from gateway_compare.paired import Contender, figures, measure_rounds, ratio  # noqa: E402
from gateway_compare.servers import (  # noqa: E402
    ECHO,
    SLEEP,
    Server,
    drop_postgres_database,
    sibling_postgres_database,
    start_module,
    wait_until_serving,
    write_functions,
)

from local_lambda import RuntimeProcess  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"
SIDES = ("base", "head")


@dataclass
class Side(Contender):
    """One module of the comparison: where its code is, what it is, and what its rounds measured."""

    tree: Path = ROOT
    database_url: str = ""
    server: Server | None = None


def git(*arguments: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *arguments], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@contextlib.contextmanager
def base_tree(revision: str | None, base_dir: Path | None, scratch: Path) -> Iterator[tuple[Path, str]]:
    """The base's checkout and a label for it: `base_dir` as it is, or `revision` in a worktree removed on the way
    out."""
    if base_dir is not None:
        yield base_dir.resolve(), str(base_dir)
        return
    assert revision is not None
    commit = git("rev-parse", "--verify", f"{revision}^{{commit}}")
    worktree = scratch / "base"
    git("worktree", "add", "--detach", str(worktree), commit)
    try:
        yield worktree, f"{revision} ({commit[:10]})"
    finally:
        git("worktree", "remove", "--force", str(worktree))


def head_label() -> str:
    commit = git("rev-parse", "--short=10", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"this checkout (HEAD {commit}{', with uncommitted changes' if dirty else ''})"


def summarise(sides: list[Side]) -> dict[str, Any]:
    """Each side's figures over all its rounds, and head over base round by round."""
    base, head = sides
    return {
        "sides": {
            # The database's name only: a PostgreSQL URL may carry a password.
            side.key: {**figures(side), "database": Path(urllib.parse.urlsplit(side.database_url).path).name}
            for side in sides
        },
        "head_over_base": ratio(head, base),
    }


def render(result: dict[str, Any]) -> str:
    lines = [
        f"{result['transport']}, {result['callers']} callers, {result['function']}: {result['rounds']} rounds of "
        f"{result['seconds']:g} s per side, alternated; module log in {result['database']}",
        f"  {'side':<9} {'calls/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU ms/call':>11} {'idle':>5} {'errors':>6}  code",
    ]
    for key in SIDES:
        side = result["sides"][key]
        cpu = side["server_cpu_ms_per_call"]
        cpu_text = "-" if cpu is None else f"{cpu:.2f}"
        lines.append(
            f"  {key:<9} {side['calls_per_s_median']:>8,.1f} {side['p50_ms']:>7.2f} {side['p99_ms']:>7.2f} "
            f"{cpu_text:>11} {side['idle_share']:>5.0%} {side['errors']:>6}  {side['label']}"
        )
    ratio = result["head_over_base"]
    lines.append(
        f"head over base, calls/s: {ratio['calls_per_s_median']:.3f}x (median of the rounds; lowest "
        f"{ratio['calls_per_s_lowest']:.3f}x, highest {ratio['calls_per_s_highest']:.3f}x)"
    )
    return "\n".join(lines)


def run(arguments: argparse.Namespace) -> dict[str, Any]:
    function = SLEEP if arguments.function == "sleep" else ECHO
    bench_database = os.environ.get("BENCH_DATABASE_URL") or None
    with tempfile.TemporaryDirectory(prefix="change-compare-") as scratch_name:
        scratch = Path(scratch_name)
        with base_tree(arguments.base, arguments.base_dir, scratch) as (base_path, base_label):
            sides = [Side("base", base_label, tree=base_path), Side("head", head_label(), tree=ROOT)]
            runtime: RuntimeProcess | None = None
            try:
                write_functions(scratch / "functions", concurrency=arguments.callers)
                with open(scratch / "runtime.log", "wb") as runtime_log:
                    runtime = RuntimeProcess.start(
                        scratch / "functions", port=0, log_level="WARNING", stdout=runtime_log, stderr=runtime_log
                    )
                for side in sides:
                    side.database_url = (
                        sibling_postgres_database(bench_database, f"_change_{side.key}")
                        if bench_database
                        else f"sqlite://{scratch / f'{side.key}.sqlite'}"
                    )
                    side.server = start_module(
                        scratch,
                        runtime.endpoint_url,
                        side.database_url,
                        max_in_flight=4 * arguments.callers,
                        tree=side.tree,
                        name=side.key,
                    )
                for side in sides:
                    assert side.server is not None
                    wait_until_serving(side.server)
                    side.path = (
                        RestPath(side.key, side.label, side.server, arguments.callers, payload_as_text=False)
                        if arguments.transport == "rest"
                        else GrpcPath(side.key, side.label, side.server, "metadata")
                    )
                asyncio.run(_open_measure_close(sides, function, arguments))
            finally:
                for side in sides:
                    if side.server is not None:
                        side.server.child.stop()
                if runtime is not None:
                    runtime.stop()
                if bench_database:
                    for side in sides:
                        if side.database_url:
                            drop_postgres_database(side.database_url, through=bench_database)
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "transport": arguments.transport,
        "function": function,
        "callers": arguments.callers,
        "rounds": arguments.rounds,
        "seconds": arguments.seconds,
        "database": "PostgreSQL (BENCH_DATABASE_URL)" if bench_database else "SQLite",
        **summarise(sides),
    }


async def _open_measure_close(sides: list[Side], function: str, arguments: argparse.Namespace) -> None:
    opened: list[CallPath] = []
    try:
        for side in sides:
            assert side.path is not None
            await side.path.open()
            opened.append(side.path)
        await measure_rounds(list(sides), function, arguments.callers, arguments.rounds, arguments.seconds)
    finally:
        for path in opened:
            await path.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    base = parser.add_mutually_exclusive_group()
    base.add_argument("--base", default="HEAD", help="the revision to measure this checkout against (HEAD)")
    base.add_argument("--base-dir", type=Path, help="a checkout to measure this one against, instead of a revision")
    parser.add_argument("--rounds", type=int, default=8, help="rounds per side (8)")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per round (3)")
    parser.add_argument("--callers", type=int, default=16, help="closed-loop callers (16)")
    parser.add_argument("--transport", choices=("grpc", "rest"), default="grpc")
    parser.add_argument("--function", choices=("echo", "sleep"), default="echo", help="echo, or the 100 ms one")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON result goes")
    arguments = parser.parse_args(argv)
    if arguments.rounds < 1 or arguments.seconds <= 0 or arguments.callers < 1:
        parser.error("--rounds and --callers must be at least 1, and --seconds more than 0")
    try:
        result = run(arguments)
    except ChildFailed as error:
        print(f"change_compare: a module did not start: {error}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as error:
        print(f"change_compare: {' '.join(error.cmd)} failed: {error.stderr.strip()}", file=sys.stderr)
        return 2
    print(render(result))
    arguments.out.mkdir(parents=True, exist_ok=True)
    out_path = arguments.out / f"change-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out_path}")
    errors = sum(side["errors"] for side in result["sides"].values())
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
