"""`make scale-test` keeps working: a short run of bench/scale_out.py passes and leaves nothing behind."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.bench.processes import postgres_databases_like, processes_with, run_script
from tests.conftest import POSTGRES_URL

SMOKE_TIMEOUT_SECONDS = 90


def _haproxy() -> str | None:
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")


@pytest.mark.skipif(
    _haproxy() is None, reason="HAProxy is not installed: apt-get install haproxy (make system-packages)"
)
@pytest.mark.skipif(POSTGRES_URL is None, reason="TEST_DATABASE_URL is not set: the scale-out test needs PostgreSQL")
def test_a_short_scale_out_run_passes_and_leaves_nothing_behind(tmp_path: Path) -> None:
    assert POSTGRES_URL is not None
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    figures = tmp_path / "figures.json"
    command = ["bench/scale_out.py", "--database-url", POSTGRES_URL, "--seconds", "1.5"]
    done = run_script([*command, "--callers", "2", "--json", str(figures)], scratch, timeout=SMOKE_TIMEOUT_SECONDS)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "scale-out test: passed" in done.stdout
    assert '"problems": []' in figures.read_text()
    # Every child (runtime, instances, HAProxy) ended with it, its scratch folder is gone, and so is its database.
    assert processes_with(f"TMPDIR={scratch}".encode()) == []
    assert list(scratch.iterdir()) == []
    assert postgres_databases_like(POSTGRES_URL, "lambda\\_action\\_scale\\_test\\_{name}") == []
