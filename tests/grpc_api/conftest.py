"""Fixtures for the gRPC transport: a real grpc.aio server over a module whose boto3 client talks to FakeLambda."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import grpc
import pytest

from app import Services, build_grpc_server, build_services
from config import Settings
from grpc_api.errors import ERROR_CODE_KEY, RETRY_AFTER_KEY
from grpc_api.server import GrpcServer
from proto import lambda_action_pb2_grpc as pb_grpc
from services.lambda_client import botocore_config
from tests.conftest import TEST_CLIENT_ID, TEST_CLIENT_SECRET, SettingsFactory, service_token
from tests.fake_lambda import FakeLambda
from tests.records import invocation_rows

ECHO = "waddlebot-echo"
FAILING = "waddlebot-fails"
# A function Lambda has, but outside the module's prefix guard (LAMBDA_FUNCTION_PREFIX=waddlebot-).
OUTSIDE = "billing-export"
ROUTER = "router_module"

Metadata = tuple[tuple[str, str], ...]


def _fail(event: Any) -> Any:
    raise ValueError(f"cannot handle {event!r}")


@pytest.fixture
def fake() -> Iterator[FakeLambda]:
    """The fake Lambda: an echo function with versions and an alias, a function that raises, one out of reach."""
    with FakeLambda() as server:
        server.add_function(ECHO, versions=("1", "2"), aliases={"live": "2"})
        server.add_function(FAILING, handler=_fail)
        server.add_function(OUTSIDE)
        yield server


def bearer(token: str) -> Metadata:
    """The `authorization` metadata of a bearer token."""
    return (("authorization", f"Bearer {token}"),)


def trailing(error: grpc.aio.AioRpcError) -> dict[str, str]:
    """The trailing metadata of a failed call, as a dict."""
    return dict(error.trailing_metadata() or ())


def error_code_of(error: grpc.aio.AioRpcError) -> str | None:
    """The stable error name the server sent with a failed call."""
    return trailing(error).get(ERROR_CODE_KEY)


def retry_after_of(error: grpc.aio.AioRpcError) -> str | None:
    """The `retry-after` the server sent with a failed call."""
    return trailing(error).get(RETRY_AFTER_KEY)


@dataclass
class Harness:
    """One running gRPC server over one module, and a channel and stub to call it."""

    settings: Settings
    module: Services
    server: GrpcServer
    channel: grpc.aio.Channel
    stub: pb_grpc.LambdaActionStub
    fake: FakeLambda
    _client_token: str | None = field(default=None, repr=False)

    @property
    def router(self) -> Metadata:
        """Metadata with a fresh router service token."""
        return bearer(service_token())

    async def client_token(self) -> str:
        """A token issued to the bootstrap test client, the way POST /api/v1/token issues it."""
        if self._client_token is None:
            issued = await self.module.authenticator.issue_token(TEST_CLIENT_ID, TEST_CLIENT_SECRET, "127.0.0.1")
            self._client_token = issued.token
        return self._client_token

    async def records(self, function_name: str | None = None) -> list[dict]:
        """Rows of the invocation log, oldest first, optionally of one function."""
        return await invocation_rows(self.module, function_name)


HarnessFactory = Callable[..., Awaitable[Harness]]


@pytest.fixture(scope="session")
def boto_session() -> boto3.session.Session:
    """One boto3 session for the run: each new session reads botocore's service models again (~50 ms a test).

    Its credentials are the fake ones of the autouse `_aws_environment` fixture, resolved once; a test about
    credentials builds its client with `build_lambda_client` (a fresh session) instead.
    """
    return boto3.session.Session()


@pytest.fixture
async def make_harness(
    make_settings: SettingsFactory, fake: FakeLambda, boto_session: boto3.session.Session
) -> AsyncIterator[HarnessFactory]:
    """Start gRPC servers over modules built as main() builds them; all stopped and closed at the end.

    The module's boto3 client (with the module's own botocore configuration) talks to `fake` unless
    `endpoint_url` (or a whole `lambda_client`) is given; keyword arguments are settings overrides.
    """
    started: list[tuple[Harness, Any]] = []

    async def build(lambda_client: Any = None, endpoint_url: str | None = None, **overrides: str) -> Harness:
        settings = make_settings(**{"GRPC_PORT": "0", "HOST": "127.0.0.1", **overrides})
        boto_client = None
        if lambda_client is None:
            # What build_lambda_client(settings, endpoint_url) builds, from the shared session.
            lambda_client = boto_client = boto_session.client(
                "lambda", endpoint_url=endpoint_url or fake.url, config=botocore_config(settings)
            )
        module = await build_services(settings, lambda_client=lambda_client)
        server = build_grpc_server(module)
        await server.start()
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        channel = grpc.aio.insecure_channel(f"{host}:{server.port}")
        harness = Harness(settings, module, server, channel, pb_grpc.LambdaActionStub(channel), fake)
        started.append((harness, boto_client))
        return harness

    yield build
    for harness, boto_client in reversed(started):
        await harness.channel.close()
        await harness.server.server.stop(None)
        await harness.module.close()
        if boto_client is not None:
            boto_client.close()


@pytest.fixture
async def harness(make_harness: HarnessFactory) -> Harness:
    """The default server: SQLite, the fake Lambda, default settings."""
    return await make_harness()
