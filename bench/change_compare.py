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
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path[:0] = [str(BENCH_DIR), str(ROOT)]

from gateway_compare.callers import GrpcPath, RestPath  # noqa: E402
from gateway_compare.children import ChildFailed  # noqa: E402
from gateway_compare.paired import (  # noqa: E402
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
    ECHO,
    SLEEP,
    start_module,
    wait_until_serving,
)

RESULTS_DIR = BENCH_DIR / "results"
SIDES = ("base", "head")


@dataclass
class Side(Contender):
    """One module of the comparison, and where its code is."""

    tree: Path = ROOT


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
        "sides": {side.key: {**figures(side), "database": database_name(side)} for side in sides},
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
    with (
        tempfile.TemporaryDirectory(prefix="change-compare-") as scratch_name,
        Databases(Path(scratch_name), "change") as databases,
        base_tree(arguments.base, arguments.base_dir, Path(scratch_name)) as (base_path, base_label),
    ):
        scratch = Path(scratch_name)
        sides = [Side("base", base_label, tree=base_path), Side("head", head_label(), tree=ROOT)]
        with echo_runtime(scratch, arguments.callers) as runtime, servers_stopped_after(list(sides)):
            for side in sides:
                side.database_url = databases.make(side.key)
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
            asyncio.run(
                open_measure_close(list(sides), function, arguments.callers, arguments.rounds, arguments.seconds)
            )
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "transport": arguments.transport,
        "function": function,
        "callers": arguments.callers,
        "rounds": arguments.rounds,
        "seconds": arguments.seconds,
        "database": databases.description,
        **summarise(sides),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    base = parser.add_mutually_exclusive_group()
    base.add_argument("--base", default="HEAD", help="the revision to measure this checkout against (HEAD)")
    base.add_argument("--base-dir", type=Path, help="a checkout to measure this one against, instead of a revision")
    add_load_arguments(parser, RESULTS_DIR)
    parser.add_argument("--transport", choices=("grpc", "rest"), default="grpc")
    parser.add_argument("--function", choices=("echo", "sleep"), default="echo", help="echo, or the 100 ms one")
    arguments = parser.parse_args(argv)
    check_load_arguments(parser, arguments)
    try:
        result = run(arguments)
    except ChildFailed as error:
        print(f"change_compare: a module did not start: {error}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as error:
        print(f"change_compare: {' '.join(error.cmd)} failed: {error.stderr.strip()}", file=sys.stderr)
        return 2
    print(render(result))
    out_path = write_result(result, arguments.out, "change")
    print(f"written to {out_path}")
    errors = sum(side["errors"] for side in result["sides"].values())
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
