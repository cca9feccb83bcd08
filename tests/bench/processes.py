"""How a bench smoke test runs its script, and checks once the run has ended that no process it started is left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_script(
    arguments: Sequence[str], scratch: Path, *, timeout: float, variables: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python <arguments>` from the project's root, as `make` runs it: none of this session's AWS_, BENCH_ or
    PEER_ settings, `variables` over that, and TMPDIR in `scratch`, which every child inherits (see processes_with).
    """
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "BENCH_", "PEER_"))}
    environment.update(variables or {})
    environment["TMPDIR"] = str(scratch)
    return subprocess.run(
        [sys.executable, *arguments], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=timeout
    )


def processes_with(variable: bytes) -> list[int]:
    """Pids of the processes whose environment holds `variable` (NAME=value): a run's children inherit its TMPDIR."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if variable in environment:
            found.append(int(entry.name))
    return found


def run_comparison(
    script: str, tmp_path: Path, arguments: Sequence[str], *, timeout: float, database_url: str | None = None
) -> tuple[str, dict, Path]:
    """One run of a comparison script (`bench/change_compare.py`, `bench/floor_compare.py`) that must succeed, its
    scratch folders under tmp_path: its stdout, the JSON result it wrote, and its TMPDIR."""
    out = tmp_path / "results"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = run_script(
        [script, *arguments, "--out", str(out)],
        scratch,
        timeout=timeout,
        variables={"BENCH_DATABASE_URL": database_url} if database_url is not None else None,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (result_file,) = out.glob("*.json")
    return done.stdout, json.loads(result_file.read_text()), scratch


def postgres_databases_like(url: str, pattern: str) -> list[str]:
    """Names of the databases on `url`'s server that match the LIKE `pattern`, where `{name}` is `url`'s database."""
    import psycopg2

    name = urllib.parse.urlsplit(url).path.lstrip("/")
    connection = psycopg2.connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (pattern.format(name=name),))
            return [row[0] for row in cursor.fetchall()]
    finally:
        connection.close()
