"""A small HTTP/1.1 server on asyncio streams: persistent connections, Content-Length and chunked bodies.

It is just enough for boto3 and curl, and fast: one task per connection, the request parsed from one read of
its head, the answer written in one piece (so neither end waits on Nagle's algorithm and delayed ACKs).

A body longer than the server's `max_body_bytes` is read but not kept: the handler gets its first
max_body_bytes + 1 bytes, enough to refuse it in its own words, and the client, having sent it all, reads
that answer. So no request makes the server hold more than max_body_bytes + 1 bytes of body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

logger = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024
# A request (its head and body) must arrive within this long once it has begun, and an idle persistent connection
# is closed after this long. Long enough for any body a client sends over loopback, short enough that connections
# left half-sent (slowloris) or forgotten do not pile up.
REQUEST_TIMEOUT_SECONDS = 60.0
_DISCARD_CHUNK_BYTES = 64 * 1024
# Content-Length, and the size of a chunk in hexadecimal (with bounded digits: int() refuses over 4300 of them).
_DECIMAL_LENGTH = re.compile(r"[0-9]{1,18}")
_HEX_LENGTH = re.compile(rb"[0-9A-Fa-f]{1,15}")


@dataclass
class HttpRequest:
    """One request, as the handler receives it."""

    method: str
    path: str  # without the query string, still percent-encoded
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: bytes  # at most the server's max_body_bytes + 1: a longer body is cut there


@dataclass
class HttpResponse:
    """One answer; Content-Length and Connection are added when it is written."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of_json(cls, status: int, value: Any, headers: dict[str, str] | None = None) -> HttpResponse:
        return cls(status, json.dumps(value).encode(), {"Content-Type": "application/json", **(headers or {})})


RequestHandler = Callable[[HttpRequest], Awaitable[HttpResponse]]


class _BadRequest(Exception):
    """The request cannot be read; answered with `status` and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class HttpServer:
    """Serves `handler` over HTTP/1.1 on one address, keeping at most `max_body_bytes` + 1 of each body."""

    def __init__(
        self, handler: RequestHandler, *, max_body_bytes: int, request_timeout: float = REQUEST_TIMEOUT_SECONDS
    ) -> None:
        self._handler = handler
        self._max_body_bytes = max_body_bytes
        self._request_timeout = request_timeout
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._stopping = False

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0 picks a free port); the bound port."""
        self._stopping = False
        self._server = await asyncio.start_server(self._serve_connection, host, port, limit=MAX_HEAD_BYTES)
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening, end every connection (requests in progress are cancelled) and wait for them."""
        if self._server is None:
            return
        self._stopping = True
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            if self._stopping:
                # Accepted just before stop() closed the listener, but started only after it looked for
                # connections to end: served now, its request would reach a runtime that has stopped.
                return
            while True:
                try:
                    async with asyncio.timeout(self._request_timeout):
                        first_byte = await reader.read(1)
                except TimeoutError:
                    # Idle too long: closed without an answer, which a client reusing the connection just now
                    # would take for the answer to its request.
                    return
                if not first_byte:  # the client closed the connection between requests
                    return
                try:
                    async with asyncio.timeout(self._request_timeout):
                        request, keep_alive = await _read_request(first_byte, reader, writer, self._max_body_bytes)
                except TimeoutError:
                    error = _BadRequest(408, f"the request did not arrive within {self._request_timeout:g} s")
                    await _answer_bad_request(writer, error)
                    return
                except _BadRequest as error:
                    await _answer_bad_request(writer, error)
                    return
                if request is None:  # the client closed the connection after a blank line
                    return
                response = await self._handler(request)
                writer.write(_render(response, keep_alive, with_body=request.method != "HEAD"))
                await writer.drain()
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away mid-request
        except asyncio.CancelledError:
            # Only stop() cancels a connection. Ending normally rather than cancelled matters: on Python 3.11,
            # asyncio's stream callback calls exception() on the finished task, which raises for a cancelled one.
            pass
        except Exception:
            logger.exception("HTTP connection failed")
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _answer_bad_request(writer: asyncio.StreamWriter, error: _BadRequest) -> None:
    body = {"Type": "User", "message": str(error), "Message": str(error)}
    writer.write(_render(HttpResponse.of_json(error.status, body), keep_alive=False))
    await writer.drain()


async def _read_request(
    first_byte: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_body_bytes: int
) -> tuple[HttpRequest | None, bool]:
    """The request `first_byte` begins and whether to keep the connection open after it; None at its end."""
    try:
        head = first_byte + await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as error:
        if not (first_byte + error.partial).strip():
            return None, False
        raise _BadRequest(400, "incomplete request head") from None
    except asyncio.LimitOverrunError:
        raise _BadRequest(431, f"request head larger than {MAX_HEAD_BYTES} bytes") from None
    lines = head.decode("latin-1").lstrip("\r\n").split("\r\n")
    request_line = lines[0].split(" ")
    if len(request_line) != 3:
        raise _BadRequest(400, f"malformed request line {lines[0]!r}")
    method, target, version = request_line
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise _BadRequest(505, f"unsupported protocol {version!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, separator, value = line.partition(":")
        if not separator or not name or name != name.strip():
            raise _BadRequest(400, f"malformed header line {line!r}")
        name = name.lower()
        headers[name] = f"{headers[name]}, {value.strip()}" if name in headers else value.strip()
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"

    if headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    if "transfer-encoding" in headers:
        if headers["transfer-encoding"].lower() != "chunked":
            raise _BadRequest(501, f"unsupported Transfer-Encoding {headers['transfer-encoding']!r}")
        body = await _read_chunked(reader, max_body_bytes)
    else:
        length_text = headers.get("content-length", "0")
        if not _DECIMAL_LENGTH.fullmatch(length_text):
            raise _BadRequest(400, f"bad Content-Length {length_text[:100]!r}")
        body = await _read_body(reader, int(length_text), keep=max_body_bytes + 1)

    path, _, query_string = target.partition("?")
    query = dict(parse_qsl(query_string, keep_blank_values=True))
    return HttpRequest(method, path, query, headers, body), keep_alive


async def _read_body(reader: asyncio.StreamReader, length: int, keep: int) -> bytes:
    """Read `length` bytes; the first `keep` of them (the rest is read and dropped)."""
    kept = await reader.readexactly(min(length, keep))
    remaining = length - len(kept)
    while remaining:
        dropped = await reader.read(min(remaining, _DISCARD_CHUNK_BYTES))
        if not dropped:
            raise asyncio.IncompleteReadError(b"", remaining)
        remaining -= len(dropped)
    return kept


async def _read_chunked(reader: asyncio.StreamReader, max_body_bytes: int) -> bytes:
    chunks: list[bytes] = []
    kept = 0
    while True:
        size = _chunk_size(await _read_line(reader))
        if size == 0:
            while await _read_line(reader) != b"\r\n":  # trailers, ignored
                pass
            return b"".join(chunks)
        chunk = await _read_body(reader, size, keep=max_body_bytes + 1 - kept)
        if chunk:
            chunks.append(chunk)
            kept += len(chunk)
        if await reader.readexactly(2) != b"\r\n":
            raise _BadRequest(400, "malformed chunked body: a chunk does not end with CRLF")


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\r\n")
    except asyncio.LimitOverrunError:
        raise _BadRequest(400, f"malformed chunked body: a line longer than {MAX_HEAD_BYTES} bytes") from None


def _chunk_size(line: bytes) -> int:
    size = line.split(b";", 1)[0].strip()
    if not _HEX_LENGTH.fullmatch(size):
        raise _BadRequest(400, f"malformed chunk size {size[:100]!r}")
    return int(size, 16)


def _render(response: HttpResponse, keep_alive: bool, with_body: bool = True) -> bytes:
    """The answer's bytes; without its body for a HEAD request (Content-Length still says what GET would get)."""
    try:
        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = ""
    lines = [f"HTTP/1.1 {response.status} {reason}"]
    lines.extend(f"{name}: {value}" for name, value in response.headers.items())
    if response.status >= 200 and response.status not in (204, 304):
        lines.append(f"Content-Length: {len(response.body)}")
    if not keep_alive:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + response.body if with_body else head
