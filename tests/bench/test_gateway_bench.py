"""`make bench` keeps working: a smoke run measures every path and leaves nothing running.

It asserts that the benchmark ran and measured, never a speed: speed is what the benchmark itself reports.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.bench.processes import ROOT, postgres_databases_like, processes_with, run_script
from tests.conftest import POSTGRES_URL

PEER = ROOT.parent / "shared" / "peer" / "lambda_action_module"
SMOKE_TIMEOUT_SECONDS = 240


def smoke(tmp_path: Path, database_url: str | None = None) -> tuple[subprocess.CompletedProcess[str], dict, Path]:
    """One `gateway_bench.py --smoke`, its scratch folders under tmp_path; its output and its JSON result."""
    out = tmp_path / "results"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = run_script(
        ["bench/gateway_bench.py", "--smoke", "--out", str(out)],
        scratch,
        timeout=SMOKE_TIMEOUT_SECONDS,
        variables={"BENCH_DATABASE_URL": database_url} if database_url is not None else None,
    )
    results = sorted(out.glob("gateway-*.json"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(results) == 1, done.stdout
    return done, json.loads(results[0].read_text()), scratch


@pytest.fixture
def smoke_run(tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], dict, Path]:
    return smoke(tmp_path)


def test_a_smoke_run_measures_every_path_and_leaves_nothing_running(smoke_run):
    done, result, scratch = smoke_run
    expected = {"direct", "minimal", "module_grpc", "module_rest"}
    if PEER.is_dir():
        expected |= {"peer_grpc", "peer_rest"}
    else:
        assert any("earlier module was left out" in note for note in result["notes"])
    assert set(result["paths"]) == expected
    assert result["errors"] == []

    for name in ("latency", "echo_throughput", "sleep_throughput"):
        runs = result["loads"][name]["results"]
        assert set(runs) == expected, name
        for key, figures in runs.items():
            assert figures["calls"] > 0, (name, key)
            assert figures["errors"] == 0, (name, key, figures["first_error"])
            assert figures["p50_ms"] > 0, (name, key)
            if key != "direct":  # the servers' own CPU, from /proc
                assert figures["server_cpu_ms_per_call"] > 0, (name, key)

    memory = result["memory"]
    assert memory["idle_rss_kb"] > 0
    for point, wanted in zip(memory["after"], (300, 400), strict=True):
        assert point["invocations"] >= wanted
        assert point["rss_kb"] > 0

    batch = result["batch"]["results"]
    assert batch["module_grpc"]["batch_ms"] > 0
    assert batch["module_grpc"]["failed"] == 0
    assert result["ratios"]["module_grpc_vs_minimal"]["echo_calls_per_s"] > 0

    # The same figures are printed as a table.
    assert "this module, gRPC" in done.stdout
    assert "module gRPC / minimal gateway" in done.stdout
    # Every child it started (runtime, module, gateways) ended with it, and its scratch folder is gone.
    assert processes_with(f"TMPDIR={scratch}".encode()) == []
    assert list(scratch.iterdir()) == []


@pytest.mark.skipif(POSTGRES_URL is None, reason="TEST_DATABASE_URL is not set")
@pytest.mark.skipif(not PEER.is_dir(), reason="the earlier module's source is not beside the repository")
def test_on_postgresql_the_earlier_modules_database_is_dropped_after(tmp_path: Path) -> None:
    assert POSTGRES_URL is not None
    _, result, scratch = smoke(tmp_path, POSTGRES_URL)

    assert result["database"].startswith("PostgreSQL")
    assert result["loads"]["echo_throughput"]["results"]["peer_grpc"]["calls"] > 0
    assert postgres_databases_like(POSTGRES_URL, "{name}\\_peer") == []
    assert processes_with(f"TMPDIR={scratch}".encode()) == []
