"""`bench/floor_compare.py` keeps working: a short run measures every server and leaves nothing behind.

It asserts that the run measured, and that the record floor recorded what it answered, never a speed.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import pytest

from tests.bench.processes import postgres_databases_like, processes_with, run_comparison, run_script
from tests.conftest import POSTGRES_URL

RUN_TIMEOUT_SECONDS = 180
ROUNDS = 2


def compare(tmp_path: Path, *arguments: str, database_url: str | None = None) -> tuple[str, dict, Path]:
    """One short run: its stdout, its JSON result, its TMPDIR."""
    short = ["--rounds", str(ROUNDS), "--seconds", "0.3", "--callers", "2"]
    return run_comparison(
        "bench/floor_compare.py", tmp_path, [*arguments, *short], timeout=RUN_TIMEOUT_SECONDS, database_url=database_url
    )


def assert_every_server_measured(result: dict, keys: list[str]) -> None:
    assert list(result["servers"]) == keys
    for key in keys:
        server = result["servers"][key]
        assert server["calls"] > 0, key
        assert server["errors"] == 0, (key, server["first_error"])
        assert server["server_cpu_ms_per_call"] > 0, key
        assert 0 <= server["idle_share"] <= 1, key
    assert list(result["over_minimal"]) == keys[1:]
    # A record floor recorded every call it was sent: it measured its record path, not less.
    for key in keys:
        if key.startswith("floor"):
            server = result["servers"][key]
            assert server["recorded"] == server["invoked"] > 0, key
    for over in result["over_minimal"].values():
        assert len(over["by_round"]) == ROUNDS
        assert 0 < over["calls_per_s_lowest"] <= over["calls_per_s_median"] <= over["calls_per_s_highest"]


def test_on_sqlite_the_three_servers_are_measured_and_nothing_is_left(tmp_path: Path) -> None:
    stdout, result, scratch = compare(tmp_path)

    assert_every_server_measured(result, ["minimal", "floor", "module"])
    assert result["database"] == "SQLite"
    assert [result["servers"][key]["database"] for key in ("minimal", "floor", "module")] == [
        None,
        "floor.sqlite",
        "module.sqlite",
    ]
    assert "record floor" in stdout
    assert "xminimal" in stdout
    # Its scratch folder, journal and databases included, is gone, and every child it started has ended.
    assert list(scratch.iterdir()) == []
    assert processes_with(f"TMPDIR={scratch}".encode()) == []


@pytest.mark.skipif(POSTGRES_URL is None, reason="TEST_DATABASE_URL is not set")
def test_on_postgresql_the_floors_databases_are_dropped_after(tmp_path: Path) -> None:
    assert POSTGRES_URL is not None
    _, result, scratch = compare(tmp_path, "--no-fdatasync-floor", database_url=POSTGRES_URL)

    assert_every_server_measured(result, ["minimal", "floor", "floor_no_fdatasync", "module"])
    name = urllib.parse.urlsplit(POSTGRES_URL).path.lstrip("/")
    assert result["servers"]["floor"]["database"] == f"{name}_floor_floor"
    assert postgres_databases_like(POSTGRES_URL, "{name}_floor_%") == []
    assert processes_with(f"TMPDIR={scratch}".encode()) == []


def test_bad_arguments_are_refused_with_what_to_fix(tmp_path: Path) -> None:
    done = run_script(["bench/floor_compare.py", "--seconds", "0"], tmp_path, timeout=60)

    assert done.returncode == 2
    assert "--rounds and --callers must be at least 1, and --seconds more than 0" in done.stderr
