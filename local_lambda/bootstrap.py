"""The worker process: imports one function's handler once, then runs the invocations the runtime sends it.

The runtime starts it as `python -I -S -u -X utf8 bootstrap.py REQUEST_FD REPLY_FD MEMORY_SIZE_MB [PATH ...]`
(isolated and without site-packages, see local_lambda/sandbox.py; the PATHs follow the code folder on
sys.path) with the function's environment (LAMBDA_TASK_ROOT, _HANDLER, AWS_LAMBDA_*), its stdout and stderr
going to the runtime's per-worker log file. Messages go both ways over the two pipes, framed by
`encode_message`.

This file uses the standard library only and imports nothing from its package: its package is not on the
worker's sys.path (handlers must not import the runtime), and the runtime imports it for the framing helpers.
It runs on Python 3.9 and later, for functions whose runtime asks for another Python than the runtime's.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import json
import logging
import os
import resource
import signal
import struct
import sys
import time
import types
import zlib
from collections.abc import Callable, Mapping
from typing import Any

# Each message: two big-endian lengths (metadata, body), the metadata as JSON, then the body bytes as they are,
# so that a payload is never escaped into a JSON string and parsed twice.
_LENGTHS = struct.Struct(">II")
_READ_CHUNK_BYTES = 1 << 20
_MEGABYTE = 1024 * 1024

# Only what a worker needs is imported at start (no typing, no decimal): every module adds to each cold start.
Handler = Callable[[object, object], object]


def encode_message(metadata: Mapping[str, object], body: bytes = b"") -> bytes:
    """One framed message: lengths, JSON metadata, body."""
    encoded = json.dumps(metadata).encode()
    return _LENGTHS.pack(len(encoded), len(body)) + encoded + body


def decode_lengths(prefix: bytes) -> tuple[int, int]:
    """The metadata and body lengths at the start of a message."""
    return _LENGTHS.unpack(prefix)


HEADER_BYTES = _LENGTHS.size


def _read_exactly(fd: int, size: int) -> bytes | None:
    """`size` bytes from `fd`, or None at end of file (the runtime closed the pipe or went away)."""
    chunks = []
    remaining = size
    while remaining:
        chunk = os.read(fd, min(remaining, _READ_CHUNK_BYTES))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _read_message(fd: int) -> tuple[dict[str, object], bytes] | None:
    prefix = _read_exactly(fd, HEADER_BYTES)
    if prefix is None:
        return None
    metadata_size, body_size = decode_lengths(prefix)
    metadata = _read_exactly(fd, metadata_size)
    body = _read_exactly(fd, body_size)
    if metadata is None or body is None:
        return None
    return json.loads(metadata), body


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class Client:
    """The mobile client that invoked the function (part of the client context), as Lambda's Python runtime has it."""

    __slots__ = ("app_package_name", "app_title", "app_version_code", "app_version_name", "installation_id")

    def __init__(self, fields: dict[str, object]) -> None:
        for name in self.__slots__:
            setattr(self, name, fields.get(name))


class ClientContext:
    """The caller's X-Amz-Client-Context: `client`, `custom` and `env`, as Lambda's Python runtime has it."""

    __slots__ = ("client", "custom", "env")

    def __init__(self, fields: dict[str, object]) -> None:
        client = fields.get("client")
        self.client = Client(client) if isinstance(client, dict) else client
        self.custom = fields.get("custom")
        self.env = fields.get("env")


class CognitoIdentity:
    """The caller's Cognito identity; always empty here, as for any caller that is not a mobile SDK."""

    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __init__(self) -> None:
        self.cognito_identity_id = None
        self.cognito_identity_pool_id = None


class LambdaContext:
    """The context object handlers receive, with the attributes Lambda's Python runtime gives it."""

    def __init__(self, metadata: Mapping[str, Any]) -> None:
        self.aws_request_id: str = metadata["request_id"]
        self.invoked_function_arn: str = metadata["invoked_function_arn"]
        self.function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
        self.function_version = os.environ["AWS_LAMBDA_FUNCTION_VERSION"]
        # A string, as Lambda's Python runtime gives it (it reads the environment variable).
        self.memory_limit_in_mb = os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]
        self.log_group_name = os.environ["AWS_LAMBDA_LOG_GROUP_NAME"]
        self.log_stream_name = os.environ["AWS_LAMBDA_LOG_STREAM_NAME"]
        self.identity = CognitoIdentity()
        client_context = metadata.get("client_context")
        self.client_context = None if client_context is None else ClientContext(json.loads(client_context))
        self._deadline_ms: float = metadata["deadline_ms"]
        # Lambda's multi-tenant functions name the tenant; an invocation here has none, as on Lambda without it.
        self.tenant_id: str | None = None

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the runtime stops this invocation."""
        return max(0, int(self._deadline_ms - time.time() * 1000))

    @staticmethod
    def log(message: str) -> None:
        """Write to the function's log, as Lambda's context.log does (no line break added)."""
        sys.stdout.write(message)
        sys.stdout.flush()


class InitError(Exception):
    """The handler could not be loaded; `body` is the error Lambda reports for it."""

    def __init__(self, error_type: str, message: str, stack_trace: list[str] | None = None) -> None:
        super().__init__(message)
        self.body = {"errorMessage": message, "errorType": error_type, "requestId": "", "stackTrace": stack_trace or []}


class _ContentCheckedSourceLoader(importlib.machinery.SourceFileLoader):
    """Checks cached bytecode against the source's content, not its modification second.

    Python reuses a __pycache__ file when the source's mtime (in whole seconds) and size match, so a handler
    edited within a second of its last import, to the same length, would run its old code. The function's own
    modules are small and edited often; hashing them on import is cheap and makes an edit always count.
    """

    def path_stats(self, path: str) -> dict[str, int]:
        source = self.get_data(path)
        return {"mtime": zlib.crc32(source), "size": len(source)}


def _check_bytecode_by_content(task_root: str) -> None:
    """Use _ContentCheckedSourceLoader for modules under the function's folder (not the standard library's)."""
    ours = importlib.machinery.FileFinder.path_hook(
        (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES),
        (_ContentCheckedSourceLoader, importlib.machinery.SOURCE_SUFFIXES),
        (importlib.machinery.SourcelessFileLoader, importlib.machinery.BYTECODE_SUFFIXES),
    )

    def hook(path: str) -> importlib.abc.PathEntryFinder:
        if path == task_root or path.startswith(task_root + os.sep):
            return ours(path)
        raise ImportError(path)  # not ours: the next hook takes it

    sys.path_hooks.insert(0, hook)
    sys.path_importer_cache.clear()


def _load_handler(handler_name: str) -> Handler:
    """Import the handler's module and find the function, reporting failures with Lambda's error types."""
    module_name, _, function_name = handler_name.rpartition(".")
    if not module_name or not function_name:
        raise InitError("Runtime.MalformedHandlerName", f"Bad handler '{handler_name}': not enough values to unpack")
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except ImportError as error:
        raise InitError("Runtime.ImportModuleError", f"Unable to import module '{module_name}': {error}") from None
    except SyntaxError as error:
        message = f"Syntax error in module '{module_name}': {error}"
        # Lambda lists the offending line rather than the import's frames (`Line`, capitalised, as it writes it).
        where = f'  File "{error.filename}" Line {error.lineno}\n    {error.text or ""}'
        raise InitError("Runtime.UserCodeSyntaxError", message, [where]) from None
    except MemoryError:
        raise InitError("Runtime.OutOfMemory", "Importing the handler exceeded the function's memory size") from None
    except Exception as error:
        raise InitError(type(error).__name__, str(error), _stack_trace(error)) from None
    handler = getattr(module, function_name, None)
    if not callable(handler):
        raise InitError("Runtime.HandlerNotFound", f"Handler '{function_name}' missing on module '{module_name}'")
    return handler


def _stack_trace(error: BaseException) -> list[str]:
    """The traceback as Lambda lists it: the user's frames only, one formatted entry each."""
    import traceback  # imported on the first error rather than at every cold start

    frames = traceback.extract_tb(error.__traceback__)
    worker_file = os.path.abspath(__file__)
    user_frames = [frame for frame in frames if os.path.abspath(frame.filename) != worker_file]
    # Import machinery frames add nothing for the user either.
    user_frames = [frame for frame in user_frames if not frame.filename.startswith("<frozen ")]
    # Written out rather than by traceback.format_list, which adds Python 3.11's ^^^ lines; Lambda's have none.
    return [
        f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}\n'
        + (f"    {frame.line}\n" if frame.line else "")
        for frame in user_frames
    ]


# Lambda's Python runtime writes a Decimal's own digits into the answer (DynamoDB returns numbers as Decimal, and
# a float would change 0.1 or a 20-digit id). json.dumps can only write what `default` returns as JSON, so each
# Decimal goes in as a marked string and the marks are replaced by the digits afterwards. The mark holds a random
# part drawn per worker, so that no string a handler returns can be taken for one.
_DECIMAL_MARK = f"local-lambda-decimal-{os.urandom(8).hex()}-"
# A handler returning bytes has them answered as they are, with the content type Lambda's Python runtime gives them.
BYTES_CONTENT_TYPE = "application/unknown"
JSON_CONTENT_TYPE = "application/json"


def _encode_result(result: object) -> tuple[bytes, str]:
    """The handler's result as Lambda's Python runtime answers it: its body and content type."""
    if isinstance(result, bytes):
        return result, BYTES_CONTENT_TYPE
    decimals: list[str] = []

    def exact_decimal(value: object) -> object:
        decimal = sys.modules.get("decimal")  # a Decimal exists only if its module was imported
        if decimal is not None and isinstance(value, decimal.Decimal):
            if value.is_nan():
                return float("nan")  # written NaN, as Lambda does; a Decimal's "NaN" digits could be "-sNaN"
            decimals.append(str(value))
            return f"{_DECIMAL_MARK}{len(decimals) - 1}"
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    # From python3.12 on, Lambda answers non-ASCII text as UTF-8 rather than \u escapes.
    text = json.dumps(result, default=exact_decimal, ensure_ascii=not _UTF8_ANSWERS)
    if decimals:
        import re  # already loaded by json; imported here only where it is used

        marked = re.compile(f'"{re.escape(_DECIMAL_MARK)}([0-9]+)"')
        text = marked.sub(lambda match: decimals[int(match.group(1))], text)
    return text.encode(), JSON_CONTENT_TYPE


def _memory_used_mb() -> int:
    return _peak_resident_kb() // 1024


def _invoke(handler: Handler, metadata: Mapping[str, Any], payload: bytes) -> tuple[dict[str, object], bytes, bool]:
    """Run one invocation: the reply's metadata and body, and whether this worker must exit afterwards."""
    request_id = metadata["request_id"]
    global _current_request_id
    _current_request_id = str(request_id)
    # Lambda sets it per invocation; the X-Ray SDK and Powertools read it from the environment.
    os.environ["_X_AMZN_TRACE_ID"] = str(metadata.get("trace_id") or "")
    try:
        context = LambdaContext(metadata)
        event = json.loads(payload) if payload else {}
        result = handler(event, context)
    except MemoryError as error:
        # Free what the handler's frames still hold before building the reply.
        _clear_frames(error.__traceback__)
        del error
        return _out_of_memory(request_id)
    except Exception as error:
        return _unhandled(request_id, error)
    try:
        encoded, content_type = _encode_result(result)
    except MemoryError:
        del result
        return _out_of_memory(request_id)
    except Exception as error:  # not serialisable, circular, or nested past the recursion limit
        body = {
            "errorMessage": f"Unable to marshal response: {error}",
            "errorType": "Runtime.MarshalError",
            "requestId": request_id,
            "stackTrace": [],
        }
        _log_error(body)
        return {"kind": "error", "memory_used_mb": _memory_used_mb()}, json.dumps(body).encode(), False
    max_response_bytes = metadata["max_response_bytes"]
    if len(encoded) > max_response_bytes:
        # Refused here rather than by the runtime, which would otherwise have to read all of it first.
        body = {
            "errorMessage": f"Response payload size ({len(encoded)} bytes) exceeded maximum allowed payload size "
            f"({max_response_bytes} bytes).",
            "errorType": "Function.ResponseSizeTooLarge",
        }
        return {"kind": "error", "memory_used_mb": _memory_used_mb()}, json.dumps(body).encode(), False
    reply = {"kind": "result", "memory_used_mb": _memory_used_mb(), "content_type": content_type}
    return reply, encoded, False


def _log_error(body: Mapping[str, Any], *, with_traceback: bool = True) -> None:
    """Write an error to the function's log as Lambda's Python runtime does, in the function's log format."""
    if _JSON_LOGS:
        moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        print(json.dumps({"timestamp": moment, "log_level": "ERROR", **body}, ensure_ascii=False), file=sys.stderr)
        return
    lines = [f"[ERROR] {body['errorType']}: {body['errorMessage']}"]
    if with_traceback:
        lines.append("Traceback (most recent call last):")
        # Lambda writes the trace's indentation as no-break spaces (U+00A0) in the log, not in the answer.
        for entry in body["stackTrace"]:
            for line in entry.splitlines():
                stripped = line.lstrip(" ")
                lines.append("\u00a0" * (len(line) - len(stripped)) + stripped)
    print("\n".join(lines), file=sys.stderr)


def _clear_frames(trace: types.TracebackType | None) -> None:
    """Drop the locals of a traceback's frames (what traceback.clear_frames does, without importing it)."""
    while trace is not None:
        with contextlib.suppress(RuntimeError):  # a frame still executing cannot be cleared
            trace.tb_frame.clear()
        trace = trace.tb_next


def _unhandled(request_id: str, error: Exception) -> tuple[dict[str, object], bytes, bool]:
    """The reply for a handler that raised: Lambda's error object, also written to the log as Lambda does."""
    stack_trace = _stack_trace(error)
    body = {
        "errorMessage": str(error),
        "errorType": type(error).__name__,
        "requestId": request_id,
        "stackTrace": stack_trace,
    }
    _log_error(body)
    return {"kind": "error", "memory_used_mb": _memory_used_mb()}, json.dumps(body).encode(), False


def _out_of_memory(request_id: str) -> tuple[dict[str, object], bytes, bool]:
    """The reply for a handler that ran out of memory.

    The worker exits after sending it: the heap of a process that ran out of memory is not worth trusting with
    the next invocation (Lambda, too, starts a new sandbox after an out-of-memory error).
    """
    # Lambda's words for a sandbox its memory limit stopped, whichever way the limit was met here.
    message = f"RequestId: {request_id} Error: Runtime exited with error: signal: killed"
    body = {"errorMessage": message, "errorType": "Runtime.OutOfMemory", "requestId": request_id, "stackTrace": []}
    _log_error(body, with_traceback=False)
    return {"kind": "error", "memory_used_mb": _memory_used_mb()}, json.dumps(body).encode(), True


def _status_kb(field: bytes) -> int | None:
    """A size from /proc/self/status, in KiB; None where there is no such file (not Linux)."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _data_segment_bytes() -> int | None:
    """This process's data segment size (VmData), which is what RLIMIT_DATA limits; None where unknown."""
    size_kb = _status_kb(b"VmData:")
    return None if size_kb is None else size_kb * 1024


def _limit_memory(memory_size_mb: int) -> int:
    """Set the hard allocation limit; the peak resident size (KiB) an invocation may reach.

    Lambda limits resident memory (a cgroup) and stops a function that goes past it. Here, two checks:

    - After each invocation, the worker's peak resident size (VmHWM, which the kernel keeps, so no spike
      between samples is missed) is compared with its size at start plus the memory size; past it,
      the invocation is answered Runtime.OutOfMemory and the worker leaves, as Lambda's sandbox would be gone.
      Resident size is what Lambda counts: reserved but untouched memory, such as each thread's 8 MB stack,
      does not count (a limit on reservations alone would refuse a 128 MB handler its 16th thread).
    - While it runs, RLIMIT_DATA stops a runaway handler before it can exhaust the host: the kernel fails the
      allocation itself, which Python raises as MemoryError, reported the same way. It counts reservations, so
      it sits well above the memory size (twice it, and at least 1 GB more), leaving room for thread stacks.

    The interpreter's own baseline is not charged, so the handler and what it imports get the whole size.
    """
    baseline_data = _data_segment_bytes()
    if baseline_data is not None:  # Linux; elsewhere only the peak check applies
        headroom_mb = max(memory_size_mb, 1024)
        limit = baseline_data + (memory_size_mb + headroom_mb) * _MEGABYTE
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    return _peak_resident_kb() + memory_size_mb * 1024


def _peak_resident_kb() -> int:
    # VmHWM belongs to this process's own address space. getrusage's ru_maxrss would not do: Linux carries it
    # over from the process that started this one, so a worker spawned by a large process would look large.
    peak_kb = _status_kb(b"VmHWM:")
    return peak_kb if peak_kb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


_JSON_LOGS = os.environ.get("AWS_LAMBDA_LOG_FORMAT") == "JSON"
_UTF8_ANSWERS = os.environ.get("AWS_EXECUTION_ENV", "") not in (
    "AWS_Lambda_python3.9",
    "AWS_Lambda_python3.10",
    "AWS_Lambda_python3.11",
)
# The invocation under way, for the log records its handler writes.
_current_request_id = ""
# Lambda's level names; WARN and FATAL are Python's WARNING and CRITICAL, TRACE is below DEBUG.
_LEVELS = {"TRACE": 5, "DEBUG": 10, "INFO": 20, "WARN": 30, "ERROR": 40, "FATAL": 50}


class _LambdaTextFormatter(logging.Formatter):
    """`[LEVEL]\t<UTC time>Z\t<request id>\t<message>`, as Lambda's Python runtime writes a record."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"[{record.levelname}]\t{_utc_moment(record)}\t{_current_request_id}\t{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class _LambdaJsonFormatter(logging.Formatter):
    """One JSON object per record, with the fields of Lambda's JSON log format."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "timestamp": _utc_moment(record),
            "level": _lambda_level(record.levelname),
            "message": record.getMessage(),
            "logger": record.name,
            "requestId": _current_request_id,
        }
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            entry["errorType"] = type(error).__name__
            entry["errorMessage"] = str(error)
            entry["stackTrace"] = _stack_trace(error)
        return json.dumps(entry, default=str)


def _utc_moment(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def _lambda_level(python_name: str) -> str:
    return {"WARNING": "WARN", "CRITICAL": "FATAL", "Level 5": "TRACE"}.get(python_name, python_name)


def _install_logging() -> None:
    """A handler on the root logger, as Lambda's Python runtime installs one: the documented
    `logging.getLogger().setLevel(logging.INFO)` then prints; AWS_LAMBDA_LOG_FORMAT and AWS_LAMBDA_LOG_LEVEL
    (the manifest's logging_config) choose the format and the level."""
    logging.addLevelName(5, "TRACE")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_LambdaJsonFormatter() if _JSON_LOGS else _LambdaTextFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = os.environ.get("AWS_LAMBDA_LOG_LEVEL")
    if level in _LEVELS:
        root.setLevel(_LEVELS[level])
    elif _JSON_LOGS:
        root.setLevel(logging.INFO)  # Lambda's default application level in JSON format


def main(argv: list[str]) -> int:
    """Load the handler, say ready, then answer invocations until the runtime closes the request pipe."""
    request_fd, reply_fd, memory_size_mb = int(argv[1]), int(argv[2]), int(argv[3])
    # Processes the handler starts must not hold the runtime's pipes open (it would miss this worker's end).
    os.set_inheritable(request_fd, False)
    os.set_inheritable(reply_fd, False)
    # Ctrl-C in a terminal reaches the whole process group; the runtime decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    task_root = os.environ["LAMBDA_TASK_ROOT"]
    os.chdir(task_root)
    # As on Lambda: the function's code first, then its dependencies and the provided boto3 (so a vendored
    # copy wins), then the standard library.
    sys.path[0:0] = [task_root, *argv[4:]]
    _check_bytecode_by_content(task_root)
    _install_logging()
    started = time.perf_counter()
    peak_limit_kb = _limit_memory(memory_size_mb)
    # The runtime stops this worker past that size, from now on: the handler's import counts too.
    _write_all(reply_fd, encode_message({"kind": "limits", "resident_limit_kb": peak_limit_kb}))
    try:
        handler = _load_handler(os.environ["_HANDLER"])
    except InitError as error:
        _log_error(error.body)
        _write_all(reply_fd, encode_message({"kind": "init_error"}, json.dumps(error.body).encode()))
        return 0
    init_ms = (time.perf_counter() - started) * 1000
    _write_all(reply_fd, encode_message({"kind": "ready", "init_ms": init_ms}))
    while True:
        message = _read_message(request_fd)
        if message is None:
            return 0
        metadata, payload = message
        reply, body, must_exit = _invoke(handler, metadata, payload)
        if not must_exit and _peak_resident_kb() > peak_limit_kb:
            reply, body, must_exit = _out_of_memory(str(metadata["request_id"]))
        reply["exiting"] = must_exit
        sys.stdout.flush()
        sys.stderr.flush()
        _write_all(reply_fd, encode_message(reply, body))
        if must_exit:
            return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except BrokenPipeError:  # the runtime went away: nothing left to answer
        sys.exit(0)
