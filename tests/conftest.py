"""Fixtures that build real settings, databases, modules and apps for the tests."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from app import Services, build_services, create_app
from config import Settings, load_settings
from models import connect
from tests.fake_lambda import ACCOUNT_ID as FAKE_ACCOUNT_ID
from tests.fake_lambda import FakeLambda

TEST_SECRET_KEY = "test-secret-key-" + "k" * 64
TEST_CLIENT_ID = "test-client"
TEST_CLIENT_SECRET = "test-client-secret-0123456789"
AWS_REGION = "us-east-1"
POSTGRES_URL = os.environ.get("TEST_DATABASE_URL")

SettingsFactory = Callable[..., Settings]


def service_token(
    service: str = "router_module",
    key: str = TEST_SECRET_KEY,
    *,
    lifetime: int = 60,
    issued_ago: int = 0,
    **claims: Any,
) -> str:
    """A token as the router mints it: HS256 with the shared key and a `service` claim."""
    now = int(time.time()) - issued_ago
    return jwt.encode({"service": service, "iat": now, "exp": now + lifetime, **claims}, key, "HS256")


def free_port() -> int:
    """A loopback port nothing listens on right now, for a server started in another process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(autouse=True)
def _aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake AWS credentials, so that no test can reach a real account or wait on instance metadata."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", AWS_REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_LAMBDA",
        "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS",
    ):
        monkeypatch.delenv(name, raising=False)


def _reset_postgres(url: str) -> None:
    db = connect("postgres3://" + url.split("://", 1)[1])
    db.executesql("DROP TABLE IF EXISTS lambda_invocations, api_clients, idempotency_keys;")
    db.commit()
    db.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: SQLite always, PostgreSQL when TEST_DATABASE_URL is set."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/lambda_action.sqlite"
    if not POSTGRES_URL:
        pytest.skip("TEST_DATABASE_URL is not set")
    _reset_postgres(POSTGRES_URL)
    return POSTGRES_URL


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database, for tests whose subject is not the database."""
    return f"sqlite:///{tmp_path}/lambda_action.sqlite"


@pytest.fixture
def make_settings(tmp_path: Path, sqlite_url: str) -> SettingsFactory:
    """Build Settings the way the module does, from environment variables (overrides as keyword arguments)."""

    def factory(**overrides: str) -> Settings:
        environ = {
            "MODULE_SECRET_KEY": TEST_SECRET_KEY,
            "DATABASE_URL": sqlite_url,
            "LOG_DIR": str(tmp_path / "logs"),
            "LOG_SPOOL_DIR": str(tmp_path / "spool"),
            "AWS_REGION": AWS_REGION,
            # The fake Lambda's account, whose ARNs the module then accepts (no STS to ask here).
            "AWS_ACCOUNT_ID": FAKE_ACCOUNT_ID,
            "RETRY_DELAY": "0.01",
            "LAMBDA_TIMEOUT": "30",
            "BOOTSTRAP_CLIENT_ID": TEST_CLIENT_ID,
            "BOOTSTRAP_CLIENT_SECRET": TEST_CLIENT_SECRET,
            "LAMBDA_BACKEND": "aws",
        }
        environ.update(overrides)
        return load_settings(environ)

    return factory


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLambda]:
    """AWS Lambda for the test: the hand-written fake endpoint (tests/fake_lambda.py), the one both transports'
    suites use. boto3 is pointed at it, so every Lambda client the test builds calls it."""
    with FakeLambda() as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", endpoint.url)
        yield endpoint


@pytest.fixture
def create_function(aws: FakeLambda) -> Callable[..., dict]:
    """Create a function (an echo) in the fake Lambda; returns its configuration."""

    def create(name: str, *, Description: str = "", MemorySize: int = 128, Timeout: int = 3) -> dict:
        return aws.add_function(name, description=Description, memory_size=MemorySize, timeout=Timeout).configuration()

    return create


@pytest.fixture
async def module(make_settings: SettingsFactory, aws: None) -> AsyncIterator[Services]:
    """The module built as main() builds it, against the fake Lambda and a fresh SQLite database."""
    built = await build_services(make_settings())
    yield built
    await built.close()


@pytest.fixture
async def client(module: Services):
    """A test client of the real app over the `module` fixture, with start-up and shutdown hooks run."""
    app = create_app(module)
    async with app.test_app() as test_app:
        yield test_app.test_client()


async def issue_token(client, client_id: str = TEST_CLIENT_ID, client_secret: str = TEST_CLIENT_SECRET) -> str:
    """A bearer token from POST /api/v1/token."""
    response = await client.post("/api/v1/token", json={"client_id": client_id, "client_secret": client_secret})
    assert response.status_code == 200, await response.get_data(as_text=True)
    return (await response.get_json())["token"]


@pytest.fixture
async def auth_headers(client) -> dict[str, str]:
    """Authorization headers for the bootstrap test client."""
    return {"Authorization": f"Bearer {await issue_token(client)}"}


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    """main() and configure_logging() replace the root logger's handlers; put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    noisy = {name: logging.getLogger(name).level for name in ("botocore", "boto3", "urllib3")}
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
    for name, noisy_level in noisy.items():
        logging.getLogger(name).setLevel(noisy_level)
