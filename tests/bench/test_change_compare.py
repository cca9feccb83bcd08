"""`bench/change_compare.py` keeps working: short runs measure both sides and leave nothing behind.

They assert that it ran and measured, never a speed: what a change is worth is what the tool itself reports.
"""

from __future__ import annotations

import subprocess
import urllib.parse
from pathlib import Path

import pytest

from tests.bench.processes import ROOT, postgres_databases_like, processes_with, run_comparison, run_script
from tests.conftest import POSTGRES_URL

RUN_TIMEOUT_SECONDS = 180
ROUNDS = 2


def compare(tmp_path: Path, *arguments: str, database_url: str | None = None) -> tuple[str, dict, Path]:
    """One short run: its stdout, its JSON result, its TMPDIR."""
    short = ["--rounds", str(ROUNDS), "--seconds", "0.3", "--callers", "2"]
    return run_comparison(
        "bench/change_compare.py",
        tmp_path,
        [*arguments, *short],
        timeout=RUN_TIMEOUT_SECONDS,
        database_url=database_url,
    )


def assert_both_sides_measured(result: dict) -> None:
    for key in ("base", "head"):
        side = result["sides"][key]
        assert side["calls"] > 0, key
        assert side["errors"] == 0, (key, side["first_error"])
        assert side["server_cpu_ms_per_call"] > 0, key
        assert 0 <= side["idle_share"] <= 1, key
    ratio = result["head_over_base"]
    assert len(ratio["by_round"]) == ROUNDS
    assert 0 < ratio["calls_per_s_lowest"] <= ratio["calls_per_s_median"] <= ratio["calls_per_s_highest"]


def test_a_revision_is_checked_out_measured_beside_this_checkout_and_removed(tmp_path: Path) -> None:
    stdout, result, scratch = compare(tmp_path, "--base", "HEAD")

    assert_both_sides_measured(result)
    assert result["sides"]["base"]["label"].startswith("HEAD (")
    assert result["sides"]["head"]["label"].startswith("this checkout (HEAD ")
    assert result["database"] == "SQLite"
    assert [result["sides"][key]["database"] for key in ("base", "head")] == ["base.sqlite", "head.sqlite"]
    assert "head over base, calls/s:" in stdout
    # The base's worktree is gone from git's list and from disk, and every child it started has ended.
    worktrees = subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert str(scratch) not in worktrees.stdout
    assert list(scratch.iterdir()) == []
    assert processes_with(f"TMPDIR={scratch}".encode()) == []


@pytest.mark.skipif(POSTGRES_URL is None, reason="TEST_DATABASE_URL is not set")
def test_over_rest_on_postgresql_each_side_has_a_database_that_is_dropped_after(tmp_path: Path) -> None:
    assert POSTGRES_URL is not None
    _, result, scratch = compare(tmp_path, "--base-dir", str(ROOT), "--transport", "rest", database_url=POSTGRES_URL)

    assert_both_sides_measured(result)
    assert result["transport"] == "rest"
    assert result["database"] == "PostgreSQL (BENCH_DATABASE_URL)"
    name = urllib.parse.urlsplit(POSTGRES_URL).path.lstrip("/")
    # Each side logged to a database of its own, beside TEST_DATABASE_URL's; neither is left.
    assert [result["sides"][key]["database"] for key in ("base", "head")] == [
        f"{name}_change_base",
        f"{name}_change_head",
    ]
    assert postgres_databases_like(POSTGRES_URL, "{name}_change_%") == []
    assert processes_with(f"TMPDIR={scratch}".encode()) == []


def test_bad_arguments_are_refused_with_what_to_fix(tmp_path: Path) -> None:
    done = run_script(["bench/change_compare.py", "--rounds", "0"], tmp_path, timeout=60)

    assert done.returncode == 2
    assert "--rounds and --callers must be at least 1" in done.stderr
