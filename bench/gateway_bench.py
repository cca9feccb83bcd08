"""The side-by-side benchmark (`make bench`): what the module adds to a Lambda call, against the alternatives.

    .venv/bin/python bench/gateway_bench.py [--smoke] [--no-peer] [--out bench/results]

One embedded Lambda runtime serves every path, with an echo function and one that sleeps 100 ms, each allowed a
worker per caller so that no call is throttled. The paths: boto3 straight to it; the minimal gateway
(gateway_compare/minimal_gateway.py, the ceiling of the module's design); the module over gRPC and over REST,
started as in production with its log in PostgreSQL when BENCH_DATABASE_URL is set, else in SQLite; and the
earlier public module from ../shared/peer (PEER_MODULE_DIR), when that folder is there. Loads run in rounds that
alternate the paths. The tables go to stdout, the same figures as JSON to bench/results/. Every server is a child
that ends with the benchmark, however it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
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

from gateway_compare import profile, report  # noqa: E402
from gateway_compare.callers import CallPath, DirectPath, GrpcPath, RestPath  # noqa: E402
from gateway_compare.children import ChildFailed, rss_kb  # noqa: E402
from gateway_compare.loads import Run, interleaved, run_load  # noqa: E402
from gateway_compare.servers import (  # noqa: E402
    ECHO,
    SLEEP,
    SLEEP_SECONDS,
    Server,
    drop_postgres_database,
    peer_database,
    peer_source_dir,
    prepare_peer,
    start_minimal_gateway,
    start_module,
    start_peer,
    wait_until_serving,
    write_functions,
)

from local_lambda import RuntimeProcess  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"
# How long py-spy samples each profiled path (--profile).
PROFILE_SECONDS = 8.0


@dataclass(frozen=True)
class Sizes:
    """How much of each load a run does."""

    warmup_calls: int
    latency_rounds: int
    latency_calls: int
    echo_callers: int
    echo_rounds: int
    echo_seconds: float
    sleep_callers: int
    sleep_rounds: int
    sleep_seconds: float
    memory_points: tuple[int, ...]
    batch_size: int
    batch_rounds: int


# A default run takes under three minutes on a 2-core machine; the smoke run, a few hundred calls per path.
FULL = Sizes(
    warmup_calls=300,
    latency_rounds=3,
    latency_calls=300,
    echo_callers=16,
    echo_rounds=3,
    echo_seconds=3.0,
    sleep_callers=32,
    sleep_rounds=2,
    sleep_seconds=3.0,
    memory_points=(10_000, 20_000),
    batch_size=50,
    batch_rounds=5,
)
SMOKE = Sizes(
    warmup_calls=20,
    latency_rounds=1,
    latency_calls=30,
    echo_callers=4,
    echo_rounds=1,
    echo_seconds=0.3,
    sleep_callers=4,
    sleep_rounds=1,
    sleep_seconds=0.3,
    memory_points=(300, 400),
    batch_size=5,
    batch_rounds=1,
)


def _machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "load_average_at_start": round(os.getloadavg()[0], 2),
    }


class Bench:
    """The servers and callers of one run, and the figures measured on them."""

    def __init__(self, sizes: Sizes, scratch: Path, *, with_peer: bool, profile_dir: Path | None = None) -> None:
        self.sizes = sizes
        self.scratch = scratch
        self.with_peer = with_peer
        # Where py-spy's samples of the module go, when the run profiles it.
        self.profile_dir = profile_dir
        self.notes: list[str] = []
        self.servers: list[Server] = []
        self.paths: list[CallPath] = []
        self.runtime: RuntimeProcess | None = None
        self.module: Server | None = None
        self.database_label = ""
        # (invocations the module has served, its RSS in kB), taken after every round of the loads.
        self.rss_samples: list[tuple[int, int]] = []
        # Databases this run made beside BENCH_DATABASE_URL's (the earlier module's), each with the database to drop
        # it through, dropped when the run ends.
        self.made_databases: list[tuple[str, str]] = []

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """The runtime and every server, stopped on the way out whatever happened."""
        try:
            yield
        finally:
            for server in reversed(self.servers):
                server.child.stop()
            if self.runtime is not None:
                self.runtime.stop()
            for url, through in self.made_databases:
                drop_postgres_database(url, through=through)

    def start(self) -> None:
        sizes = self.sizes
        most_callers = max(sizes.echo_callers, sizes.sleep_callers, sizes.batch_size)
        functions = self.scratch / "functions"
        write_functions(functions, concurrency=most_callers)
        runtime_log = open(self.scratch / "runtime.log", "wb")  # noqa: SIM115 - the child holds it until it ends
        with runtime_log:
            self.runtime = RuntimeProcess.start(
                functions, port=0, log_level="WARNING", stdout=runtime_log, stderr=runtime_log
            )
        lambda_url = self.runtime.endpoint_url

        bench_database = os.environ.get("BENCH_DATABASE_URL") or None
        if bench_database:
            module_database = bench_database
            self.database_label = "PostgreSQL (BENCH_DATABASE_URL)"
        else:
            module_database = f"sqlite://{self.scratch / 'module.sqlite'}"
            self.database_label = "SQLite (set BENCH_DATABASE_URL for PostgreSQL)"

        self.module = start_module(self.scratch, lambda_url, module_database, max_in_flight=4 * most_callers)
        self.servers.append(self.module)
        minimal = start_minimal_gateway(self.scratch, lambda_url, threads=most_callers)
        self.servers.append(minimal)
        peer: Server | None = None
        source = peer_source_dir()
        if not self.with_peer:
            self.notes.append("the earlier module was left out (--no-peer)")
        elif not source.is_dir():
            self.notes.append(f"the earlier module was left out: {source} is not there")
        else:
            copy = prepare_peer(source, self.scratch)
            peer_url = peer_database(bench_database, self.scratch)
            if bench_database:
                self.made_databases.append((peer_url, bench_database))
            peer = start_peer(copy, self.scratch, lambda_url, peer_url)
            self.servers.append(peer)
        for server in self.servers:
            wait_until_serving(server)

        self.paths = [
            DirectPath(lambda_url, most_callers),
            GrpcPath("minimal", "minimal gateway, gRPC", minimal, None),
            GrpcPath("module_grpc", "this module, gRPC", self.module, "metadata"),
            RestPath("module_rest", "this module, REST", self.module, most_callers, payload_as_text=False),
        ]
        if peer is not None:
            self.paths.append(GrpcPath("peer_grpc", "earlier module, gRPC", peer, "message"))
            self.paths.append(RestPath("peer_rest", "earlier module, REST", peer, most_callers, payload_as_text=True))

    def path(self, key: str) -> CallPath | None:
        return next((path for path in self.paths if path.key == key), None)

    async def measure(self) -> dict[str, Any]:
        sizes = self.sizes
        for path in self.paths:
            await path.open()
        try:
            assert self.module is not None
            idle_rss = rss_kb(self.module.child.pid)
            # Warm every path on both functions: connections, threads, and a runtime worker for every caller.
            for function, callers in ((ECHO, sizes.echo_callers), (SLEEP, sizes.sleep_callers)):
                for path in self.paths:
                    await run_load(path, function, callers, calls=max(sizes.warmup_calls, callers))

            profiled = await self._profile() if self.profile_dir is not None else None
            latency = await interleaved(
                self.paths, ECHO, 1, sizes.latency_rounds, calls=sizes.latency_calls, after_each=self._sample_rss
            )
            echo = await interleaved(
                self.paths,
                ECHO,
                sizes.echo_callers,
                sizes.echo_rounds,
                seconds=sizes.echo_seconds,
                after_each=self._sample_rss,
            )
            sleep = await interleaved(
                self.paths,
                SLEEP,
                sizes.sleep_callers,
                sizes.sleep_rounds,
                seconds=sizes.sleep_seconds,
                after_each=self._sample_rss,
            )
            batch = await self._batch()
            memory = await self._memory(idle_rss)
        finally:
            for path in self.paths:
                await path.close()
        return {
            "loads": {
                "latency": {
                    "callers": 1,
                    "rounds": sizes.latency_rounds,
                    "calls_per_round": sizes.latency_calls,
                    "results": _summaries(latency),
                },
                "echo_throughput": {
                    "callers": sizes.echo_callers,
                    "rounds": sizes.echo_rounds,
                    "seconds_per_round": sizes.echo_seconds,
                    "results": _summaries(echo),
                },
                "sleep_throughput": {
                    "callers": sizes.sleep_callers,
                    "function_seconds": SLEEP_SECONDS,
                    "rounds": sizes.sleep_rounds,
                    "seconds_per_round": sizes.sleep_seconds,
                    "results": _summaries(sleep),
                },
            },
            "batch": batch,
            "memory": memory,
            **({"profile": profiled} if profiled is not None else {}),
        }

    async def _profile(self) -> dict[str, Any]:
        """py-spy (threads holding the GIL) on the minimal gateway and the module, under an echo load on each path."""
        assert self.profile_dir is not None
        seconds, callers = PROFILE_SECONDS, self.sizes.echo_callers
        profiles: dict[str, Any] = {}
        for key in ("minimal", "module_grpc", "module_rest"):
            path = self.path(key)
            assert path is not None
            assert path.server is not None
            raw = self.profile_dir / f"profile-{key}-{time.strftime('%Y%m%d-%H%M%S')}.txt"
            sampler = profile.start_py_spy(path.server.child.pid, seconds, raw, gil_only=True)
            try:
                run = await run_load(path, ECHO, callers, seconds=seconds)
            finally:
                _, problems = await asyncio.to_thread(sampler.communicate)
            if sampler.returncode != 0 or not raw.exists():
                self.notes.append(f"py-spy failed on {key}: {problems.decode(errors='replace')[-300:]}")
                continue
            profiles[key] = {
                "seconds": seconds,
                "callers": callers,
                "calls": run.calls,
                "server_cpu_ms_per_call": run.summary()["server_cpu_ms_per_call"],
                "samples": str(raw),
                "gil_ms_per_call": profile.summarise(raw.read_text().splitlines(), run.calls),
            }
        return profiles

    async def _batch(self) -> dict[str, Any]:
        """A BatchInvoke of `batch_size` echo calls against as many single calls in a row, per path; medians."""
        size, rounds = self.sizes.batch_size, self.sizes.batch_rounds
        results: dict[str, dict[str, Any]] = {}
        for path in self.paths:
            if isinstance(path, RestPath):
                continue  # the batch figure is a gRPC one; REST's singles are in the loads above
            singles, batches, failed = [], [], 0
            for _ in range(rounds):
                run = await run_load(path, ECHO, 1, calls=size)
                failed += run.errors
                singles.append(sum(run.latencies_ms))
                if isinstance(path, GrpcPath) and path.key != "minimal":
                    started = time.perf_counter()
                    failed += await path.batch(ECHO, size)
                    batches.append((time.perf_counter() - started) * 1000)
            figures: dict[str, Any] = {"singles_ms": round(statistics.median(singles), 3), "failed": failed}
            if batches:
                figures["batch_ms"] = round(statistics.median(batches), 3)
            results[path.key] = figures
        return {"size": size, "rounds": rounds, "results": results}

    def _served(self) -> int:
        return sum(path.invocations for path in self.paths if path.server is self.module)

    def _sample_rss(self) -> None:
        assert self.module is not None
        self.rss_samples.append((self._served(), rss_kb(self.module.child.pid)))

    async def _memory(self, idle_rss: int) -> dict[str, Any]:
        """The module's RSS once it has served each of `memory_points` invocations.

        The first sample taken after a round of the loads at or past the point; where the loads did not get there,
        echo calls over gRPC fill up to it.
        """
        grpc_path = self.path("module_grpc")
        assert grpc_path is not None
        callers = self.sizes.echo_callers
        after = []
        for point in self.sizes.memory_points:
            sample = next((sample for sample in self.rss_samples if sample[0] >= point), None)
            if sample is None:
                run = await run_load(grpc_path, ECHO, callers, calls=point - self._served())
                if run.errors:
                    self.notes.append(f"memory fill: {run.errors} calls failed ({run.first_error})")
                self._sample_rss()
                sample = self.rss_samples[-1]
            after.append({"invocations": sample[0], "rss_kb": sample[1]})
        return {"idle_rss_kb": idle_rss, "fill_callers": callers, "after": after}


def _summaries(runs: dict[str, Run]) -> dict[str, Any]:
    return {key: run.summary() for key, run in runs.items()}


def _errors_in(result: dict[str, Any]) -> list[str]:
    found = []
    for name, load in result["loads"].items():
        for key, figures in load["results"].items():
            if figures["errors"]:
                found.append(f"{name}, {key}: {figures['errors']} errors, first: {figures['first_error']}")
    for key, figures in result["batch"]["results"].items():
        if figures["failed"]:
            found.append(f"batch, {key}: {figures['failed']} failed")
    return found


def run(
    sizes: Sizes, *, with_peer: bool, out_dir: Path, markdown: bool, profile_module: bool = False
) -> tuple[dict[str, Any], Path]:
    """One whole run: start everything, measure, stop everything; the result and where its JSON went."""
    began = time.perf_counter()
    machine = _machine()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lambda-action-bench-") as scratch_name:
        bench = Bench(sizes, Path(scratch_name), with_peer=with_peer, profile_dir=out_dir if profile_module else None)
        with bench.running():
            bench.start()
            measured = asyncio.run(bench.measure())
    result: dict[str, Any] = {
        "machine": machine,
        "database": bench.database_label,
        "paths": {path.key: path.label for path in bench.paths},
        "notes": bench.notes,
        **measured,
    }
    result["errors"] = _errors_in(result)
    result["notes"].extend(result["errors"])
    result["ratios"] = report.compute_ratios(result)
    result["duration_s"] = round(time.perf_counter() - began, 1)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_path = out_dir / f"gateway-{stamp}.json"
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
    print(report.render(result, markdown=markdown))
    print(f"written to {out_path}")
    return result, out_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help="a few hundred calls per path, to check it runs")
    parser.add_argument("--no-peer", action="store_true", help="leave the earlier module out")
    parser.add_argument("--markdown", action="store_true", help="print the tables as markdown (for the README)")
    parser.add_argument(
        "--profile", action="store_true", help="also sample the module with py-spy under an echo load, per transport"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON result goes")
    args = parser.parse_args(argv)
    try:
        result, _ = run(
            SMOKE if args.smoke else FULL,
            with_peer=not args.no_peer,
            out_dir=args.out,
            markdown=args.markdown,
            profile_module=args.profile,
        )
    except ChildFailed as error:
        print(f"bench: a server did not start: {error}", file=sys.stderr)
        return 2
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
