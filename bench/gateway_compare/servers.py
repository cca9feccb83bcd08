"""The servers compared: the benchmark's functions, the module, the minimal gateway and the earlier public module.

All of them call the one embedded Lambda runtime the benchmark starts, so they differ only in what lies between
the caller and that endpoint.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway_compare.children import (
    ROOT,
    Child,
    ChildFailed,
    child_environment,
    free_ports,
    post_json,
    spawn,
    wait_for_http,
    wait_for_port,
)

ECHO = "waddlebot-bench-echo"
SLEEP = "waddlebot-bench-sleep"
SLEEP_SECONDS = 0.1
AWS_REGION = "us-east-1"
DUMMY_AWS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_REGION": AWS_REGION,
    "AWS_DEFAULT_REGION": AWS_REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}
_HANDLERS = {
    ECHO: '"""Answers with the event it was given."""\n\n\ndef lambda_handler(event, context):\n    return event\n',
    SLEEP: (
        f'"""Sleeps {SLEEP_SECONDS * 1000:g} ms, as a function waiting on an API would, then answers."""\n\n'
        "import time\n\n\n"
        f"def lambda_handler(event, context):\n    time.sleep({SLEEP_SECONDS})\n    return event\n"
    ),
}


def write_functions(folder: Path, concurrency: int) -> None:
    """The benchmark's functions, each allowed `concurrency` workers so that no caller is ever throttled."""
    for name, source in _HANDLERS.items():
        function_dir = folder / name
        function_dir.mkdir(parents=True)
        (function_dir / "handler.py").write_text(source)
        manifest = {"handler": "handler.lambda_handler", "timeout": 30, "concurrency": concurrency}
        (function_dir / "function.json").write_text(json.dumps(manifest, indent=2) + "\n")


@dataclass
class Server:
    """A gateway the benchmark started: its process, where it serves, and the token its callers present."""

    child: Child
    grpc_target: str
    rest_url: str | None = None
    # The credentials exchanged for `token` at POST /api/v1/token once the server answers.
    client_id: str = "bench"
    client_secret: str = ""
    token: str = ""


def module_environment(
    *,
    rest_port: int,
    grpc_port: int,
    lambda_url: str,
    database_url: str,
    secret_key: str,
    client_id: str,
    client_secret: str,
    log_dir: Path,
    spool_dir: Path,
    **more: str,
) -> dict[str, str]:
    """The environment of `python app.py` run as in production (LAMBDA_BACKEND=aws, its log in the database) against
    `lambda_url`, with `more` settings over it."""
    return child_environment(
        {
            **DUMMY_AWS,
            "ENVIRONMENT": "production",
            "HOST": "127.0.0.1",
            "REST_PORT": str(rest_port),
            "GRPC_PORT": str(grpc_port),
            "LAMBDA_BACKEND": "aws",
            "AWS_ENDPOINT_URL_LAMBDA": lambda_url,
            "MODULE_SECRET_KEY": secret_key,
            "BOOTSTRAP_CLIENT_ID": client_id,
            "BOOTSTRAP_CLIENT_SECRET": client_secret,
            "DATABASE_URL": database_url,
            "LOG_LEVEL": "WARNING",
            "LOG_DIR": str(log_dir),
            "LOG_SPOOL_DIR": str(spool_dir),
            **more,
        }
    )


def start_module(
    scratch: Path,
    lambda_url: str,
    database_url: str,
    max_in_flight: int,
    *,
    tree: Path = ROOT,
    name: str = "module",
) -> Server:
    """`python app.py` of `tree` (this checkout unless given) as in production (LAMBDA_BACKEND=aws, its log in the
    database), against `lambda_url`; its logs and journal under `scratch`, named after `name`."""
    rest_port, grpc_port = free_ports(2)
    client_secret = secrets.token_urlsafe(24)
    env = module_environment(
        rest_port=rest_port,
        grpc_port=grpc_port,
        lambda_url=lambda_url,
        database_url=database_url,
        secret_key=secrets.token_urlsafe(64),
        client_id="bench",
        client_secret=client_secret,
        log_dir=scratch / f"{name}-logs",
        spool_dir=scratch / f"{name}-spool",
        MAX_CONCURRENT_REQUESTS=str(max_in_flight),
        SHUTDOWN_GRACE_SECONDS="5",
    )
    child = spawn(name, [sys.executable, "app.py"], cwd=tree, env=env, log_path=scratch / f"{name}.log")
    return Server(child, f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{rest_port}", client_secret=client_secret)


def start_minimal_gateway(scratch: Path, lambda_url: str, threads: int) -> Server:
    """bench/gateway_compare/minimal_gateway.py in a process of its own, as the module runs in one."""
    (grpc_port,) = free_ports(1)
    env = child_environment({**DUMMY_AWS, "PYTHONPATH": os.pathsep.join([str(ROOT / "bench"), str(ROOT)])})
    command = [
        sys.executable,
        "-m",
        "gateway_compare.minimal_gateway",
        "--endpoint-url",
        lambda_url,
        "--port",
        str(grpc_port),
        "--threads",
        str(threads),
    ]
    child = spawn("minimal gateway", command, cwd=ROOT, env=env, log_path=scratch / "minimal-gateway.log")
    return Server(child, f"127.0.0.1:{grpc_port}")


def peer_source_dir() -> Path:
    """Where the earlier public module's source is: PEER_MODULE_DIR, or the shared copy beside the repository."""
    configured = os.environ.get("PEER_MODULE_DIR")
    return Path(configured) if configured else ROOT.parent / "shared" / "peer" / "lambda_action_module"


def prepare_peer(source: Path, scratch: Path) -> Path:
    """A copy of the peer's source in `scratch`, with the gRPC modules it imports but does not ship."""
    copy = scratch / "peer"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    command = [sys.executable, "-m", "grpc_tools.protoc", "-I.", "--python_out=.", "--grpc_python_out=."]
    subprocess.run([*command, "grpc_proto/lambda_action.proto"], cwd=copy, check=True, capture_output=True)
    return copy


def peer_database(bench_database_url: str | None, scratch: Path) -> str:
    """The peer's database, with its table created (it never creates it itself).

    On PostgreSQL a database of its own beside BENCH_DATABASE_URL's (`<name>_peer`): both modules name their table
    `lambda_invocations`, with different columns. Without PostgreSQL, a SQLite file of its own.
    """
    if bench_database_url is None:
        url = f"sqlite://{scratch / 'peer.sqlite'}"
    else:
        url = sibling_postgres_database(bench_database_url, "_peer")
    _create_peer_table(url, scratch)
    return url


def sibling_postgres_database(url: str, suffix: str) -> str:
    """The URL of a database beside `url`'s, named after it with `suffix`, created when it is not there."""
    from psycopg2 import sql

    parts = urllib.parse.urlsplit(url)
    name = parts.path.lstrip("/") + suffix

    def create(cursor: Any) -> None:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cursor.fetchone() is None:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    _administer(url, create)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


def drop_postgres_database(url: str, through: str) -> None:
    """Drop the database of `url`, connected through the database of `through`, its sessions ended first."""
    from psycopg2 import sql

    name = urllib.parse.urlsplit(url).path.lstrip("/")
    _administer(
        through,
        lambda cursor: cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))),
    )


def _administer(url: str, work: Callable[[Any], None]) -> None:
    """`work(cursor)` on a connection to `url` outside a transaction, as CREATE and DROP DATABASE need."""
    import psycopg2

    connection = psycopg2.connect(url)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            work(cursor)
    finally:
        connection.close()


def _create_peer_table(url: str, scratch: Path) -> None:
    """The table the peer writes each invocation to, as its README describes it, through its own PyDAL adapter."""
    from pydal import DAL, Field

    # The peer connects with postgres:// (psycopg2's adapter), so its columns are made by the same adapter.
    url = url.replace("postgresql://", "postgres://")
    with tempfile.TemporaryDirectory(dir=scratch) as migrations:
        db = DAL(url, folder=migrations)
        try:
            exists = "lambda_invocations" in _table_names(db)
            db.define_table(
                "lambda_invocations",
                Field("function_name", "string", required=True),
                Field("invocation_type", "string", required=True),
                Field("payload", "text"),
                Field("alias", "string"),
                Field("version", "string"),
                Field("status_code", "integer"),
                Field("response_payload", "text"),
                Field("function_error", "string"),
                Field("executed_version", "string"),
                Field("request_id", "string"),
                Field("success", "boolean"),
                Field("error_message", "text"),
                Field("invoked_at", "datetime"),
                Field("completed_at", "datetime"),
                migrate=not exists,
            )
            db.commit()
        finally:
            db.close()


def _table_names(db: object) -> set[str]:
    if getattr(db, "_dbname", "") == "sqlite":
        rows = db.executesql("SELECT name FROM sqlite_master WHERE type = 'table'")  # type: ignore[attr-defined]
    else:
        rows = db.executesql("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")  # type: ignore[attr-defined]
    return {row[0] for row in rows}


def start_peer(copy: Path, scratch: Path, lambda_url: str, database_url: str) -> Server:
    """The earlier public module from its prepared copy, with this project's Python, against `lambda_url`."""
    rest_port, grpc_port = free_ports(2)
    log_dir = scratch / "peer-logs"
    log_dir.mkdir()
    env = child_environment(
        {
            **DUMMY_AWS,
            "AWS_ENDPOINT_URL": lambda_url,
            "DATABASE_URL": database_url,
            "MODULE_SECRET_KEY": secrets.token_urlsafe(64),
            "HOST": "127.0.0.1",
            "REST_PORT": str(rest_port),
            "GRPC_PORT": str(grpc_port),
            "LOG_DIR": str(log_dir),
            "LOG_LEVEL": "WARNING",
        }
    )
    child = spawn("peer", [sys.executable, "app.py"], cwd=copy, env=env, log_path=scratch / "peer.log")
    # It signs a token for any client id and secret.
    return Server(child, f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{rest_port}", client_secret="bench")


def wait_until_serving(server: Server) -> None:
    """Wait for its ports; then, where it serves REST, exchange its client credentials for a token."""
    if server.rest_url is not None:
        wait_for_http(server.child, f"{server.rest_url}/health")
    wait_for_port(server.child, int(server.grpc_target.rsplit(":", 1)[1]))
    if server.rest_url is None:
        return
    credentials = {"client_id": server.client_id, "client_secret": server.client_secret}
    answer = post_json(f"{server.rest_url}/api/v1/token", credentials)
    if not isinstance(answer, dict) or not answer.get("token"):
        raise ChildFailed(f"{server.child.name} gave no token: {answer!r}")
    server.token = answer["token"]
