"""The HTTP server itself, with raw sockets: malformed, oversized, slow and HEAD requests."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from local_lambda import LocalLambdaRuntime
from local_lambda.http_server import HttpRequest, HttpResponse, HttpServer
from tests.local_lambda.conftest import FunctionMaker

SMALL_BODY_LIMIT = 1000
INVOKE_ECHO = b"POST /2015-03-31/functions/echo/invocations HTTP/1.1\r\n"
CHUNKED = b"Transfer-Encoding: chunked\r\n\r\n"


class BodySizeRecorder:
    """A handler answering with the size of the body it was given, and remembering every size."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        self.sizes.append(len(request.body))
        return HttpResponse.of_json(200, {"size": len(request.body)})


@pytest.fixture
async def small_server() -> AsyncIterator[tuple[HttpServer, int, BodySizeRecorder]]:
    """An HttpServer keeping bodies up to SMALL_BODY_LIMIT bytes, giving requests 0.5 s to arrive."""
    recorder = BodySizeRecorder()
    server = HttpServer(recorder, max_body_bytes=SMALL_BODY_LIMIT, request_timeout=0.5)
    port = await server.start("127.0.0.1", 0)
    try:
        yield server, port, recorder
    finally:
        await server.stop()


async def _exchange(port: int, data: bytes, read_timeout: float = 5.0) -> bytes:
    """Send `data`, then read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(read_timeout):
            return await reader.read()
    finally:
        writer.close()


def _raw_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(data)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
        return answer


def test_head_answers_carry_no_body(runtime: LocalLambdaRuntime) -> None:
    answer = _raw_exchange(runtime.port, b"HEAD /ping HTTP/1.1\r\n\r\nGET /ping HTTP/1.1\r\nConnection: close\r\n\r\n")

    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 ")
    assert b"Content-Length: " in head  # what a GET would have carried, as HTTP has it
    # Right after the HEAD answer's headers comes the next answer: a body there would be read as its start.
    assert rest.startswith(b"HTTP/1.1 200 "), rest[:100]
    assert rest.endswith(b'\r\n\r\n{"status": "ok"}')


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(INVOKE_ECHO + "Content-Length: \xb2\r\n\r\n{}".encode("latin-1"), id="superscript-digit"),
        pytest.param(INVOKE_ECHO + b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n{}", id="5000-digit-length"),
        pytest.param(INVOKE_ECHO + CHUNKED + b"-5\r\nabc\r\n0\r\n\r\n", id="negative-chunk"),
        pytest.param(INVOKE_ECHO + CHUNKED + b"0x2\r\n{}\r\n0\r\n\r\n", id="0x-chunk"),
        pytest.param(INVOKE_ECHO + CHUNKED + b"2\r\n{}XX0\r\n\r\n", id="chunk-without-crlf"),
        pytest.param(INVOKE_ECHO + CHUNKED + b"1" * 70000 + b"\r\n", id="long-chunk-line"),
    ],
)
def test_malformed_lengths_are_answered_400(
    make_function: FunctionMaker, runtime: LocalLambdaRuntime, request_bytes: bytes
) -> None:
    make_function("echo", "def lambda_handler(event, context):\n    return event\n")

    answer = _raw_exchange(runtime.port, request_bytes)

    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"Connection: close" in answer


def test_a_valid_chunked_body_is_read(make_function: FunctionMaker, runtime: LocalLambdaRuntime) -> None:
    make_function("echo", "def lambda_handler(event, context):\n    return event\n")

    answer = _raw_exchange(
        runtime.port,
        INVOKE_ECHO + b"Connection: close\r\n" + CHUNKED + b'4;ext=1\r\n{"a"\r\n3\r\n: 1\r\n1\r\n}\r\n0\r\n\r\n',
    )

    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b'\r\n\r\n{"a": 1}')


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_body_over_the_limit_is_read_but_not_kept(
    small_server: tuple[HttpServer, int, BodySizeRecorder], chunked: bool
) -> None:
    _, port, recorder = small_server
    big = b"x" * (3 * 1024 * 1024)
    if chunked:
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (big[:1000], big[1000:]))
        first = b"POST /big HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    else:
        first = b"POST /big HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(big), big)
    second = b"POST /small HTTP/1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"

    answer = await _exchange(port, first + second)

    # The handler sees one byte past the limit, enough to refuse the request; the rest was never held.
    assert recorder.sizes == [SMALL_BODY_LIMIT + 1, 2]
    assert answer.count(b"HTTP/1.1 200 ") == 2  # and the connection went on with the next request


async def test_a_request_that_does_not_arrive_in_time_is_answered_408(
    small_server: tuple[HttpServer, int, BodySizeRecorder],
) -> None:
    _, port, recorder = small_server
    slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", port)
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        slow_writer.write(b"POST /slow HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")  # and never the rest
        await slow_writer.drain()

        # Other connections are served meanwhile.
        assert b"HTTP/1.1 200 " in await _exchange(port, b"GET /other HTTP/1.1\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(5):
            answer = await slow_reader.read()
            idle_answer = await idle_reader.read()
    finally:
        slow_writer.close()
        idle_writer.close()

    assert answer.startswith(b"HTTP/1.1 408 ")
    assert idle_answer == b""  # a connection that never began a request is closed without an answer
    assert recorder.sizes == [0]


def test_an_invoke_over_64_mb_is_request_too_large(make_function: FunctionMaker, lambda_client: Any) -> None:
    make_function("echo", "def lambda_handler(event, context):\n    return event\n")

    with pytest.raises(ClientError) as error:
        lambda_client.invoke(FunctionName="echo", Payload=b'"' + b"x" * (65 * 1024 * 1024) + b'"')

    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert error.value.response["Error"]["Code"] == "RequestEntityTooLargeException"


async def test_a_connection_accepted_as_stop_begins_is_not_served() -> None:
    late_calls: list[int] = []
    for turns_before_stop in range(6):
        recorder = BodySizeRecorder()
        server = HttpServer(recorder, max_body_bytes=SMALL_BODY_LIMIT)
        port = await server.start("127.0.0.1", 0)
        # Connected and sent without the loop running; the server accepts it within the next few turns.
        with socket.create_connection(("127.0.0.1", port)) as connection:
            connection.sendall(b"POST /late HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
            for _ in range(turns_before_stop):
                await asyncio.sleep(0)
            await server.stop()
            served_before_stop = len(recorder.sizes)
            await asyncio.sleep(0.05)  # time for a connection stop() missed to be served
            late_calls.append(len(recorder.sizes) - served_before_stop)

    # A request served after stop() returned would run on a stopped runtime (and start a worker nothing stops).
    assert late_calls == [0] * 6
