"""hypothesis-made messages for every RPC, and bytes that are no message at all: only the mapping's codes answer.

A real server (the module over the fake Lambda and SQLite) runs on its own loop in a thread for the whole file, so
that hypothesis can drive it from plain synchronous tests with a blocking channel. `make test` draws FUZZ_EXAMPLES
examples per test (default 25); `make fuzz` many more.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import build_grpc_server, build_services
from config import Settings, load_settings
from grpc_api.errors import GRPC_STATUS_BY_ERROR
from proto import lambda_action_pb2 as pb
from services.lambda_client import build_local_lambda_client
from tests.conftest import TEST_SECRET_KEY
from tests.fake_lambda import FakeLambda
from tests.grpc_api.conftest import ECHO, bearer, service_token

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
# What the module may answer: OK, or a status its error mapping gives (gRPC's own for a call the client cancels).
ALLOWED_CODES = {grpc.StatusCode.OK, *GRPC_STATUS_BY_ERROR.values()} - {grpc.StatusCode.INTERNAL}
FUZZ_SETTINGS = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
SERVICE = "/lambda_action.LambdaAction/"


class ServerThread:
    """The module's gRPC server on an event loop of its own thread; `target` is where it listens."""

    def __init__(self, settings: Settings, fake: FakeLambda) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fuzzed-server", daemon=True)
        self._thread.start()
        self._settings = settings
        # The fake's credentials given outright: this file's server outlives each test's AWS environment.
        self._client = build_local_lambda_client(settings, fake.url)
        self._module: Any = None
        self._server: Any = None
        self.target = self._run(self._start())

    def _run(self, coroutine: Any) -> Any:
        future: Future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=60)

    async def _start(self) -> str:
        self._module = await build_services(self._settings, lambda_client=self._client)
        self._server = build_grpc_server(self._module)
        await self._server.start()
        return f"127.0.0.1:{self._server.port}"

    async def _stop(self) -> None:
        await self._server.server.stop(None)
        await self._module.close()

    def close(self) -> None:
        try:
            self._run(self._stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
            self._client.close()


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpc.Channel]:
    folder: Path = tmp_path_factory.mktemp("fuzzed")
    settings = load_settings(
        {
            "MODULE_SECRET_KEY": TEST_SECRET_KEY,
            "DATABASE_URL": f"sqlite:///{folder / 'module.sqlite'}",
            "LOG_DIR": str(folder / "logs"),
            "LOG_SPOOL_DIR": str(folder / "spool"),
            "LAMBDA_BACKEND": "aws",
            "GRPC_PORT": "0",
            "HOST": "127.0.0.1",
            "MAX_RETRIES": "0",
        }
    )
    with FakeLambda() as fake:
        fake.add_function(ECHO)
        server = ServerThread(settings, fake)
        opened = grpc.insecure_channel(server.target)
        try:
            yield opened
        finally:
            opened.close()
            server.close()


def _text() -> st.SearchStrategy[str]:
    # Protobuf strings are UTF-8: a lone surrogate cannot even be put in a message.
    return st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=80)


def _json_text() -> st.SearchStrategy[str]:
    return st.one_of(
        _text(),
        st.sampled_from(["{}", "[]", "null", "NaN", '{"a": Infinity}', "1e400", "[" * 3000 + "]" * 3000, '"\\u0000"']),
    )


def _names() -> st.SearchStrategy[str]:
    return st.one_of(
        _text(),
        st.sampled_from(
            [ECHO, f"{ECHO}\n", "arn:aws:lambda:us-east-1:000000000000:function:" + ECHO, "x" * 200, ECHO + ":1"]
        ),
    )


def _instants() -> st.SearchStrategy[str]:
    return st.one_of(
        _text(),
        st.sampled_from(["2026-12-01T10:00:00Z", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"]),
        st.datetimes(timezones=st.timezones()).map(lambda moment: moment.isoformat()),
    )


def _invoke_requests() -> st.SearchStrategy[pb.InvokeFunctionRequest]:
    return st.builds(
        pb.InvokeFunctionRequest,
        function_name=_names(),
        payload=_json_text(),
        invocation_type=st.one_of(st.sampled_from(["", "RequestResponse", "Event", "DryRun"]), _text()),
        alias=st.one_of(st.just(""), _text()),
        version=st.one_of(st.just(""), st.sampled_from(["1", "$LATEST", "0" * 31]), _text()),
        token=st.one_of(st.just(""), _text()),
        client_context=st.one_of(st.just(""), _json_text()),
    )


REQUESTS: dict[str, st.SearchStrategy[Any]] = {
    "InvokeFunction": _invoke_requests(),
    "InvokeAsync": st.builds(pb.InvokeAsyncRequest, function_name=_names(), payload=_json_text(), token=_text()),
    "BatchInvoke": st.builds(
        pb.BatchInvokeRequest, invocations=st.lists(_invoke_requests(), max_size=5), token=_text()
    ),
    "ListFunctions": st.builds(
        pb.ListFunctionsRequest,
        token=_text(),
        max_items=st.integers(min_value=-(2**31), max_value=2**31 - 1),
        next_marker=_text(),
    ),
    "GetFunctionConfig": st.builds(
        pb.GetFunctionConfigRequest, function_name=_names(), token=_text(), qualifier=_text()
    ),
    "ListInvocations": st.builds(
        pb.ListInvocationsRequest,
        function_name=st.one_of(st.just(""), _names()),
        success=st.integers(min_value=-5, max_value=5),
        invocation_type=st.one_of(st.just(""), st.sampled_from(["Event", "DryRun"]), _text()),
        transport=st.one_of(st.just(""), st.sampled_from(["rest", "grpc"]), _text()),
        since=st.one_of(st.just(""), _instants()),
        until=st.one_of(st.just(""), _instants()),
        limit=st.integers(min_value=-(2**31), max_value=2**31 - 1),
        cursor=st.one_of(st.just(""), _text()),
    ),
    "GetInvocation": st.builds(
        pb.GetInvocationRequest, invocation_id=st.one_of(_text(), st.just("0" * 32), st.just("f" * 33))
    ),
    "GetStats": st.builds(
        pb.GetStatsRequest,
        since=st.one_of(st.just(""), _instants()),
        until=st.one_of(st.just(""), _instants()),
        function_name=st.one_of(st.just(""), _names()),
    ),
}


def test_every_rpc_is_fuzzed():
    assert set(REQUESTS) == set(pb.DESCRIPTOR.services_by_name["LambdaAction"].methods_by_name)


def _code_of(call: Any, request: Any, metadata: Any) -> grpc.StatusCode:
    try:
        call(request, metadata=metadata, timeout=30)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("method", sorted(REQUESTS))
def test_any_message_gets_a_code_of_the_mapping(channel: grpc.Channel, method: str):
    call = channel.unary_unary(
        SERVICE + method, request_serializer=lambda message: message.SerializeToString(), response_deserializer=None
    )

    @FUZZ_SETTINGS
    @given(request=REQUESTS[method], authorized=st.booleans())
    def check(request: Any, authorized: bool) -> None:
        metadata = bearer(service_token()) if authorized else None
        code = _code_of(call, request, metadata)
        assert code in ALLOWED_CODES, (code, request)

    check()


@pytest.mark.parametrize("method", sorted(REQUESTS))
def test_any_bytes_get_a_code_of_the_mapping(channel: grpc.Channel, method: str):
    call = channel.unary_unary(SERVICE + method, request_serializer=None, response_deserializer=None)

    @FUZZ_SETTINGS
    @given(data=st.binary(max_size=300))
    def check(data: bytes) -> None:
        code = _code_of(call, data, bearer(service_token()))
        assert code in ALLOWED_CODES, (code, data)

    check()
