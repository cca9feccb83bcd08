"""`python app.py init-db`: the deployment's one-off job that creates the tables before replicas start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from config import PROJECT_ROOT
from models import connect


def _init_db(database_url: str) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "LAMBDA_"))}
    environment.update({"DATABASE_URL": database_url, "MODULE_SECRET_KEY": "i" * 64})
    return subprocess.run(
        [sys.executable, "app.py", "init-db"],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_creates_every_table_and_can_run_again(database_url: str):
    first = _init_db(database_url)
    again = _init_db(database_url)

    assert first.returncode == 0, first.stderr
    assert again.returncode == 0, again.stderr
    db = connect(
        database_url if database_url.startswith("sqlite") else "postgres3://" + database_url.split("://", 1)[1]
    )
    try:
        for table in ("api_clients", "lambda_invocations", "idempotency_keys"):
            assert db.executesql(f"SELECT COUNT(*) FROM {table};")[0][0] == 0
    finally:
        db.close()


def test_an_unreachable_database_is_one_clear_line_and_exit_1(tmp_path: Path):
    result = _init_db("postgresql://postgres@127.0.0.1:1/nowhere")

    assert result.returncode == 1
    assert "cannot open the database at DATABASE_URL=postgresql://postgres@127.0.0.1:1/nowhere" in result.stderr
    assert "Traceback" not in result.stderr
