"""A hand-written fake of the AWS Lambda REST API, served over real HTTP on loopback for real boto3 clients.

    with FakeLambda() as fake:
        echo = fake.add_function("waddlebot-echo", handler=lambda event: event, aliases={"live": "1"})
        echo.script(Reply.throttle(), Reply.throttle())  # the next two invokes are throttled, then it runs
        client = build_lambda_client(settings, endpoint_url=fake.url)
        ...
        assert len(fake.calls("Invoke", "waddlebot-echo")) == 3

It answers Invoke, ListFunctions and GetFunctionConfiguration the way Lambda does (status codes, headers and
error bodies that botocore maps to its errors), records every request it receives, and can be scripted per
function: a Python handler, a queue of canned replies, a delay, or a gate that holds invocations.
Only what is listed here is implemented; anything else is answered as an unknown operation.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import socket
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
MAX_SYNC_PAYLOAD_BYTES = 6 * 1024 * 1024
MAX_EVENT_PAYLOAD_BYTES = 1024 * 1024
# ListFunctions answers at most this many functions per page, whatever MaxItems asks for.
MAX_LIST_PAGE = 50
# A held invocation gives up after this long, so that a forgotten gate cannot hang a test run.
MAX_HOLD_SECONDS = 30.0

Handler = Callable[[Any], Any]
# Error types whose JSON body spells the message "message"; the others spell it "Message" (as Lambda does).
_LOWERCASE_MESSAGE = {
    "TooManyRequestsException",
    "InvalidRequestContentException",
    "RequestTooLargeException",
    "RequestEntityTooLargeException",
    "InvalidParameterValueException",
}


def echo(event: Any) -> Any:
    """The default handler: return the event."""
    return event


@dataclass(frozen=True)
class Reply:
    """One HTTP answer; scripted replies are given instead of running the function."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # Close the connection without answering (the caller cannot know whether the request was handled).
    drop: bool = False

    @classmethod
    def of_json(cls, status: int, value: Any, **headers: str) -> Reply:
        return cls(status, json.dumps(value).encode(), {"Content-Type": "application/json", **headers})

    @classmethod
    def error(cls, status: int, error_type: str, message: str, *, kind: str = "User", **headers: str) -> Reply:
        """A Lambda error: botocore reads the code from x-amzn-ErrorType and the message from the body."""
        key = "message" if error_type in _LOWERCASE_MESSAGE else "Message"
        return cls.of_json(status, {"Type": kind, key: message}, **{"x-amzn-ErrorType": error_type, **headers})

    @classmethod
    def throttle(cls, retry_after: float | None = None) -> Reply:
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        return cls.error(429, "TooManyRequestsException", "Rate Exceeded.", **headers)

    @classmethod
    def service_error(cls, message: str = "An internal error occurred.") -> Reply:
        return cls.error(500, "ServiceException", message, kind="Service")

    @classmethod
    def dropped(cls) -> Reply:
        return cls(0, drop=True)


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the fake received it."""

    method: str
    path: str  # URL-decoded, without the query string
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: bytes
    operation: str  # Invoke, ListFunctions, GetFunctionConfiguration or Unknown
    function_name: str | None  # the bare name, for Invoke and GetFunctionConfiguration
    request_id: str  # the x-amzn-RequestId the fake answered with
    received_at: float = field(default_factory=time.monotonic)


@dataclass
class FakeFunction:
    """One function: its behaviour and what it was asked to do."""

    name: str
    handler: Handler = echo
    versions: tuple[str, ...] = ()  # published version numbers, such as ("1", "2")
    aliases: dict[str, str] = field(default_factory=dict)  # alias name -> version
    delay: float = 0.0  # seconds a synchronous invoke runs before answering (ended early when the fake stops)
    hold: threading.Event | None = None  # when given, synchronous invokes wait until it is set
    runtime: str = "python3.12"
    memory_size: int = 128
    timeout: int = 3
    description: str = ""
    scripted: deque[Reply] = field(default_factory=deque)
    queued_events: list[Any] = field(default_factory=list)  # events of Event invocations, in order

    def script(self, *replies: Reply) -> None:
        """Answer the next requests for this function with `replies`, one each, before running it again."""
        self.scripted.extend(replies)

    def version_for(self, qualifier: str | None) -> str | None:
        """The version a qualifier selects, or None when this function has no such version or alias."""
        if qualifier in (None, "", "$LATEST"):
            return "$LATEST"
        if qualifier in self.versions:
            return qualifier
        return self.aliases.get(qualifier)

    def arn(self, qualifier: str | None = None) -> str:
        arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.name}"
        return f"{arn}:{qualifier}" if qualifier else arn

    def configuration(self, qualifier: str | None = None) -> dict[str, Any]:
        return {
            "FunctionName": self.name,
            "FunctionArn": self.arn(qualifier),
            "Runtime": self.runtime,
            "Role": f"arn:aws:iam::{ACCOUNT_ID}:role/{self.name}-role",
            "Handler": "handler.lambda_handler",
            "CodeSize": 1024,
            "Description": self.description,
            "Timeout": self.timeout,
            "MemorySize": self.memory_size,
            "LastModified": "2024-01-01T00:00:00.000+0000",
            "Version": self.version_for(qualifier),
            "State": "Active",
            "Architectures": ["x86_64"],
            "Environment": {"Variables": {"SECRET": "never shown to callers"}},
        }


class FakeLambda:
    """The fake Lambda endpoint; start it with `with FakeLambda() as fake:` (or start() and stop())."""

    def __init__(self) -> None:
        self.functions: dict[str, FakeFunction] = {}
        self.requests: list[RecordedRequest] = []
        # Replies for the next requests of any operation, answered before anything else is looked at.
        self.scripted: deque[Reply] = deque()
        self.max_concurrent = 0
        # Seconds ListFunctions and GetFunctionConfiguration take to answer (ended early when the fake stops).
        self.control_plane_delay = 0.0
        self._active = 0
        self._lock = threading.Lock()
        self._active_changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- set-up ------------------------------------------------------------------------------------------

    def add_function(self, name: str, handler: Handler = echo, **options: Any) -> FakeFunction:
        function = FakeFunction(name, handler, **options)
        self.functions[name] = function
        return function

    def script(self, *replies: Reply) -> None:
        """Answer the next requests, whatever they ask, with `replies`."""
        self.scripted.extend(replies)

    # -- what happened -----------------------------------------------------------------------------------

    def calls(self, operation: str | None = None, function_name: str | None = None) -> list[RecordedRequest]:
        """The requests received, optionally only of one operation and one function."""
        with self._lock:
            requests = list(self.requests)
        return [
            request
            for request in requests
            if (operation is None or request.operation == operation)
            and (function_name is None or request.function_name == function_name)
        ]

    @property
    def active(self) -> int:
        """Requests being handled right now."""
        return self._active

    def wait_until_active(self, count: int, timeout: float = 5.0) -> None:
        """Block until `count` requests are being handled at once; AssertionError after `timeout` seconds."""
        with self._active_changed:
            if not self._active_changed.wait_for(lambda: self._active >= count, timeout):
                raise AssertionError(f"{count} requests were never handled at once ({self._active} are)")

    # -- life cycle --------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "the fake is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeLambda:
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.01,), name="fake-lambda", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end every connection and wait for every handler thread."""
        if self._server is None:
            return
        self._stopping.set()
        for function in self.functions.values():
            if function.hold is not None:
                function.hold.set()
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()  # joins the handler threads
        if self._thread is not None:
            self._thread.join()
        self._server = None

    def __enter__(self) -> FakeLambda:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- answering ---------------------------------------------------------------------------------------

    def _handle(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            self._active += 1
            self.max_concurrent = max(self.max_concurrent, self._active)
            self._active_changed.notify_all()
        try:
            scripted = _next(self.scripted)
            if scripted is not None:
                return scripted
            if request.operation == "Invoke":
                return self._invoke(request)
            if request.operation in ("ListFunctions", "GetFunctionConfiguration") and self.control_plane_delay:
                self._stopping.wait(self.control_plane_delay)
            if request.operation == "ListFunctions":
                return self._list_functions(request.query)
            if request.operation == "GetFunctionConfiguration":
                return self._get_configuration(request)
            return Reply.error(404, "UnknownOperationException", f"no such operation: {request.method} {request.path}")
        finally:
            with self._lock:
                self._active -= 1
                self._active_changed.notify_all()

    def _find(self, request: RecordedRequest) -> tuple[FakeFunction, str | None] | Reply:
        """The function and the qualifier a request names, or the error Lambda would answer."""
        name, qualifier = request.function_name or "", request.query.get("Qualifier")
        raw_qualifier = _split_name(request.path.strip("/").split("/")[2])[1]
        if raw_qualifier and qualifier and raw_qualifier != qualifier:
            return Reply.error(
                400, "InvalidParameterValueException", "The derived qualifier from the function name does not match"
            )
        qualifier = qualifier or raw_qualifier
        function = self.functions.get(name)
        if function is None or function.version_for(qualifier) is None:
            arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}" + (f":{qualifier}" if qualifier else "")
            return Reply.error(404, "ResourceNotFoundException", f"Function not found: {arn}")
        return function, qualifier

    def _invoke(self, request: RecordedRequest) -> Reply:
        found = self._find(request)
        if isinstance(found, Reply):
            return found
        function, qualifier = found
        invocation_type = request.headers.get("x-amz-invocation-type", "RequestResponse")
        if invocation_type not in ("RequestResponse", "Event", "DryRun"):
            return Reply.error(400, "InvalidParameterValueException", f"bad InvocationType {invocation_type!r}")
        # AWS's answers to an oversized request, as it words them for each invocation type.
        size = len(request.body)
        if invocation_type == "Event" and size > MAX_EVENT_PAYLOAD_BYTES:
            return Reply.error(
                413,
                "RequestEntityTooLargeException",
                f"{size} byte payload is too large for the Event invocation type "
                f"(limit {MAX_EVENT_PAYLOAD_BYTES} bytes)",
            )
        if size > MAX_SYNC_PAYLOAD_BYTES:
            return Reply.error(
                413,
                "RequestEntityTooLargeException",
                f"Request must be smaller than {MAX_SYNC_PAYLOAD_BYTES} bytes for the Invoke operation",
            )
        scripted = _next(function.scripted)
        if scripted is not None:
            return scripted
        try:
            event = json.loads(request.body or b"{}")
        except ValueError as error:
            return Reply.error(
                400, "InvalidRequestContentException", f"Could not parse request body into json: {error}"
            )
        version = function.version_for(qualifier)
        if invocation_type == "DryRun":
            return Reply(204)
        if invocation_type == "Event":
            function.queued_events.append(event)
            return Reply(202)
        if function.hold is not None:
            function.hold.wait(MAX_HOLD_SECONDS)
        if function.delay:
            self._stopping.wait(function.delay)
        started = time.perf_counter()
        headers = {"X-Amz-Executed-Version": str(version)}
        log_lines = [f"START RequestId: {request.request_id} Version: {version}"]
        try:
            body = _encode_result(function.handler(event))
        except Exception as error:
            headers["X-Amz-Function-Error"] = "Unhandled"
            body = json.dumps(
                {
                    "errorMessage": str(error),
                    "errorType": type(error).__name__,
                    "stackTrace": traceback.format_tb(error.__traceback__),
                }
            ).encode()
            log_lines.append(f"[ERROR] {type(error).__name__}: {error}")
        duration_ms = (time.perf_counter() - started) * 1000
        log_lines.append(f"END RequestId: {request.request_id}")
        log_lines.append(f"REPORT RequestId: {request.request_id}\tDuration: {duration_ms:.2f} ms")
        if request.headers.get("x-amz-log-type") == "Tail":
            headers["X-Amz-Log-Result"] = base64.b64encode("\n".join(log_lines).encode()[-4096:]).decode()
        return Reply(200, body, headers)

    def _list_functions(self, query: dict[str, str]) -> Reply:
        try:
            max_items = int(query.get("MaxItems", MAX_LIST_PAGE))
        except ValueError:
            max_items = 0
        if not 1 <= max_items <= 10000:
            return Reply.error(400, "InvalidParameterValueException", "MaxItems must be between 1 and 10000")
        names = sorted(self.functions)
        start = 0
        if "Marker" in query:
            try:
                start = names.index(base64.urlsafe_b64decode(query["Marker"]).decode())
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return Reply.error(400, "InvalidParameterValueException", "Invalid marker")
        page = names[start : start + min(max_items, MAX_LIST_PAGE)]
        answer: dict[str, Any] = {"Functions": [self.functions[name].configuration() for name in page]}
        following = start + len(page)
        if following < len(names):
            # Opaque to callers, as Lambda's are: here, the name of the next function.
            answer["NextMarker"] = base64.urlsafe_b64encode(names[following].encode()).decode()
        return Reply.of_json(200, answer)

    def _get_configuration(self, request: RecordedRequest) -> Reply:
        found = self._find(request)
        if isinstance(found, Reply):
            return found
        function, qualifier = found
        return _next(function.scripted) or Reply.of_json(200, function.configuration(qualifier))


def _next(replies: deque[Reply]) -> Reply | None:
    """The next scripted reply, if any (requests are handled on several threads at once)."""
    try:
        return replies.popleft()
    except IndexError:
        return None


def _encode_result(value: Any) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value).encode()


def _route(method: str, path: str) -> tuple[str, str | None]:
    """The operation a request is for, and the bare function name it names (name, ARN or name:qualifier)."""
    parts = path.strip("/").split("/")
    if parts[:2] != ["2015-03-31", "functions"]:
        return "Unknown", None
    if len(parts) == 2 and method == "GET":
        return "ListFunctions", None
    if len(parts) == 4:
        name = _split_name(parts[2])[0]
        if parts[3] == "invocations" and method == "POST":
            return "Invoke", name
        if parts[3] == "configuration" and method == "GET":
            return "GetFunctionConfiguration", name
    return "Unknown", None


def _split_name(raw: str) -> tuple[str, str | None]:
    fields = raw.split(":")
    if raw.startswith("arn:") and len(fields) >= 7:
        return fields[6], fields[7] if len(fields) > 7 else None
    if len(fields) == 3 and fields[1] == "function":  # partial ARN: account:function:name
        return fields[2], None
    return fields[0], fields[1] if len(fields) > 1 else None


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as boto3's connection pool expects
    server: _Server

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        self.server.untrack(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read fake.requests instead
        pass

    def _serve(self) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        operation, function_name = _route(self.command, path)
        request = RecordedRequest(
            method=self.command,
            path=path,
            query=dict(parse_qsl(url.query)),
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
            operation=operation,
            function_name=function_name,
            request_id=str(uuid.uuid4()),
        )
        reply = self.server.fake._handle(request)
        if reply.drop:
            self.close_connection = True
            return
        try:
            self.send_response(reply.status)
            for name, value in {**reply.headers, "x-amzn-RequestId": request.request_id}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:  # the caller gave up (a read timeout) or the fake is stopping
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() then waits for every handler thread
    block_on_close = True

    def __init__(self, fake: FakeLambda) -> None:
        super().__init__(("127.0.0.1", 0), _RequestHandler)
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)
            if self.fake._stopping.is_set():
                _shut(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def close_connections(self) -> None:
        """End idle keep-alive connections, whose threads would otherwise wait for the next request."""
        with self._connections_lock:
            for connection in self._connections:
                _shut(connection)


def _shut(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)


def closed_port_url() -> str:
    """The URL of a loopback port nothing listens on: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"
