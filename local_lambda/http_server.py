"""A small HTTP/1.1 server on asyncio streams: persistent connections, Content-Length and chunked bodies.

It is just enough for boto3 and curl, and fast: one task per connection, the request parsed from one read of
its head, the answer written in one piece (so neither end waits on Nagle's algorithm and delayed ACKs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

logger = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024
# Far beyond any payload Lambda accepts, so that the API itself answers 413 with Lambda's error; past this the
# connection is closed without reading the rest.
MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass
class HttpRequest:
    """One request, as the handler receives it."""

    method: str
    path: str  # without the query string, still percent-encoded
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: bytes


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
    """Serves `handler` over HTTP/1.1 on one address."""

    def __init__(self, handler: RequestHandler) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0 picks a free port); the bound port."""
        self._server = await asyncio.start_server(self._serve_connection, host, port, limit=MAX_HEAD_BYTES)
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening, end every connection (requests in progress are cancelled) and wait for them."""
        if self._server is None:
            return
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
            while True:
                try:
                    request, keep_alive = await _read_request(reader, writer)
                except _BadRequest as error:
                    body = {"Type": "User", "message": str(error), "Message": str(error)}
                    writer.write(_render(HttpResponse.of_json(error.status, body), keep_alive=False))
                    await writer.drain()
                    return
                if request is None:  # the client closed the connection between requests
                    return
                response = await self._handler(request)
                writer.write(_render(response, keep_alive))
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


async def _read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[HttpRequest | None, bool]:
    """The next request on a connection and whether to keep the connection open after it; None at its end."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as error:
        if not error.partial.strip():
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
        body = await _read_chunked(reader)
    else:
        length_text = headers.get("content-length", "0")
        if not length_text.isdigit():
            raise _BadRequest(400, f"bad Content-Length {length_text!r}")
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            raise _BadRequest(413, f"request body larger than {MAX_BODY_BYTES} bytes")
        body = await reader.readexactly(length) if length else b""

    path, _, query_string = target.partition("?")
    query = dict(parse_qsl(query_string, keep_blank_values=True))
    return HttpRequest(method, path, query, headers, body), keep_alive


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        size_line = (await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise _BadRequest(400, "malformed chunk size") from None
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers, ignored
                pass
            return b"".join(chunks)
        total += size
        if total > MAX_BODY_BYTES:
            raise _BadRequest(413, f"request body larger than {MAX_BODY_BYTES} bytes")
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)


def _render(response: HttpResponse, keep_alive: bool) -> bytes:
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
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body
