"""`python app.py init-db`: the deployment's one-off job that creates the tables before replicas start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pydal import DAL

from config import PROJECT_ROOT, normalize_database_url
from models import connect


def _init_db(database_url: str, log_dir: Path) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "LAMBDA_"))}
    # As the Job runs it: production settings, and logs kept out of the repository.
    environment.update(
        {
            "ENVIRONMENT": "production",
            "DATABASE_URL": database_url,
            "MODULE_SECRET_KEY": "i" * 64,
            "LOG_DIR": str(log_dir),
        }
    )
    return subprocess.run(
        [sys.executable, "app.py", "init-db"],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _index_names(db: DAL) -> set[str]:
    if db._adapter.dbengine == "sqlite":
        rows = db.executesql("SELECT name FROM sqlite_master WHERE type = 'index';")
    else:
        rows = db.executesql("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema();")
    return {row[0] for row in rows}


def test_it_creates_every_table_and_index_and_can_run_again(database_url: str, tmp_path: Path):
    first = _init_db(database_url, tmp_path / "logs")
    again = _init_db(database_url, tmp_path / "logs")

    assert first.returncode == 0, first.stderr
    assert again.returncode == 0, again.stderr
    db = connect(normalize_database_url(database_url))
    try:
        for table in ("api_clients", "lambda_invocations", "idempotency_keys"):
            assert db.executesql(f"SELECT COUNT(*) FROM {table};")[0][0] == 0
        assert {
            "idx_lambda_invocations_function_invoked",
            "idx_lambda_invocations_caller_invoked",
            "idx_idempotency_keys_caller_key",
        } <= _index_names(db)
    finally:
        db.close()


def test_an_unreachable_database_is_one_clear_line_and_exit_1(tmp_path: Path):
    result = _init_db("postgresql://postgres@127.0.0.1:1/nowhere", tmp_path / "logs")

    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "cannot open the database at DATABASE_URL=postgresql://postgres@127.0.0.1:1/nowhere" in line
