"""`make bench-runtime` keeps working: a smoke run measures every row and leaves nothing running.

It asserts that the benchmark ran and measured, never a speed: speed is what the benchmark itself reports.
"""

from __future__ import annotations

import json
from importlib.util import find_spec
from pathlib import Path

from tests.bench.processes import processes_with, run_script

SMOKE_TIMEOUT_SECONDS = 240
LATENCY_ROWS = {
    "warm invoke, boto3",
    "warm invoke, raw HTTP",
    "after an edit, invoke",
    "after an edit, worker init",
    "first invoke after start",
    "subprocess per call",
}
COMPARED = "python-lambda-local per call"


def test_a_smoke_run_measures_every_row_and_leaves_nothing_running(tmp_path: Path) -> None:
    figures_file = tmp_path / "figures.json"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = run_script(
        ["bench/local_lambda_bench.py", "--smoke", "--json", str(figures_file)], scratch, timeout=SMOKE_TIMEOUT_SECONDS
    )

    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(figures_file.read_text())
    rows = result["rows"]
    expected = LATENCY_ROWS | ({COMPARED} if find_spec("lambda_local") is not None else set())
    assert expected <= set(rows), rows
    for name in expected:
        assert rows[name]["n"] > 0, name
        assert rows[name]["p50"] > 0, name
        assert name in done.stdout
    if COMPARED not in rows:
        # Left out, and said so, only when python-lambda-local is not there to run.
        assert any("python-lambda-local" in note for note in result["notes"]), result["notes"]
    throughputs = [measured for name, measured in rows.items() if name.startswith("throughput")]
    assert len(throughputs) == 6
    assert all(measured["per_second"] > 0 for measured in throughputs)
    # Every child it started (the runtime, its workers, python-lambda-local) ended with it; its scratch is gone.
    assert processes_with(f"TMPDIR={scratch}".encode()) == []
    assert list(scratch.iterdir()) == []
