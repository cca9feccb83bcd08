"""Warm worker processes: started on a function's first use, reused while its code is unchanged, replaced when
they time out, crash or run out of memory, and never more at once than the function's concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from local_lambda.bootstrap import HEADER_BYTES, JSON_CONTENT_TYPE, decode_lengths, encode_message
from local_lambda.errors import ServiceFailure, TooManyRequests
from local_lambda.manifest import FunctionVersion
from local_lambda.sandbox import WorkerLaunch, resident_kb

logger = logging.getLogger(__name__)

WORKER_SCRIPT = Path(__file__).with_name("bootstrap.py")
# Lambda gives a function's initialisation (interpreter start and handler import) its own 10 seconds.
INIT_TIMEOUT_SECONDS = 10.0
# How long a retired worker may take to leave after its request pipe is closed, before it is killed.
STOP_GRACE_SECONDS = 1.0
# Lambda's LogType=Tail returns the last 4 KB of the invocation's log.
LOG_TAIL_BYTES = 4096
# A handler can write over a gigabyte a second to its log file (in TMPDIR, which may be memory). While it runs,
# the file is checked this often, and past LOG_FILE_MAX_BYTES its tail is kept in memory and the file emptied.
# (The check is armed at every invocation: a 10 ms timer made warm invocations about 10% slower, 25 ms does not.)
LOG_TRIM_INTERVAL_SECONDS = 0.025
LOG_FILE_MAX_BYTES = 1024 * 1024
_SIGNAL_NAMES = {
    signal.SIGKILL: "killed",
    signal.SIGSEGV: "segmentation fault",
    signal.SIGABRT: "aborted",
    signal.SIGTERM: "terminated",
    signal.SIGBUS: "bus error",
}

WorkerKey = Hashable


@dataclass(frozen=True)
class InvocationRequest:
    """What a worker needs to run one invocation."""

    request_id: str
    payload: bytes
    invoked_function_arn: str
    client_context: str | None  # the decoded X-Amz-Client-Context JSON text
    timeout_seconds: float
    max_response_bytes: int  # a longer result is answered Function.ResponseSizeTooLarge by the worker
    trace_id: str = ""  # the X-Ray trace header, the handler's _X_AMZN_TRACE_ID


@dataclass(frozen=True)
class HandlerOutcome:
    """How an invocation ended: the reply payload (a result or Lambda's error object) and what to log."""

    payload: bytes
    function_error: str | None  # "Unhandled" when payload is an error object
    output: bytes  # the last LOG_TAIL_BYTES the handler wrote to stdout and stderr
    duration_ms: float
    init_duration_ms: float | None  # set on a worker's first invocation
    memory_used_mb: int | None
    platform_log: str = ""  # a line Lambda itself adds to the log, such as a timeout notice
    error_type: str | None = None
    content_type: str = JSON_CONTENT_TYPE  # the answer's; a handler's bytes are answered as application/unknown


def _error_outcome(
    error_type: str,
    message: str,
    *,
    output: bytes = b"",
    duration_ms: float = 0.0,
    init_duration_ms: float | None = None,
    platform_log: str = "",
) -> HandlerOutcome:
    body = {"errorMessage": message, "errorType": error_type}
    return HandlerOutcome(
        payload=json.dumps(body).encode(),
        function_error="Unhandled",
        output=output,
        duration_ms=duration_ms,
        init_duration_ms=init_duration_ms,
        memory_used_mb=None,
        platform_log=platform_log,
        error_type=error_type,
    )


def exit_message(request_id: str, returncode: int | None) -> str:
    """The error message Lambda gives for a runtime that ended mid-invocation."""
    if returncode == 0:
        return f"RequestId: {request_id} Error: Runtime exited without providing a reason"
    return f"RequestId: {request_id} Error: Runtime exited with error: {exit_description(returncode)}"


def exit_description(returncode: int | None) -> str:
    """A worker's end as Lambda words it: 'exit status 1', 'signal: killed'."""
    if returncode is None:
        return "unknown exit"
    if returncode < 0:
        number = -returncode
        with contextlib.suppress(ValueError):
            return f"signal: {_SIGNAL_NAMES.get(signal.Signals(number), signal.Signals(number).name)}"
        return f"signal: {number}"
    return f"exit status {returncode}"


async def wait_for_exit(process: subprocess.Popen[bytes]) -> int:
    """Wait for a child process to end without blocking the loop; its return code."""
    returncode = process.poll()
    if returncode is not None:
        return returncode
    try:
        # A pidfd becomes readable when the process ends: no thread and no SIGCHLD handler needed.
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):  # not Linux, or a kernel before 5.3
        return await asyncio.to_thread(process.wait)
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()

    def ended() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, ended)
    try:
        await exited
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    return process.wait()


def _pipe_file(fd: int, mode: str) -> IO[bytes]:
    """A file object over a pipe end, for the loop's pipe transports (which close it)."""
    return open(fd, mode, buffering=0)


class Worker:
    """One worker process running one version of one function, one invocation at a time."""

    def __init__(self, key: WorkerKey, version: FunctionVersion, launch: WorkerLaunch) -> None:
        self.key = key
        self.version = version
        self.log_stream_name = f"{datetime.now(UTC):%Y/%m/%d}/[{version.version}]{uuid.uuid4().hex}"
        self._launch = launch
        self._environment = {**launch.environment, "AWS_LAMBDA_LOG_STREAM_NAME": self.log_stream_name}
        self.process: subprocess.Popen[bytes] | None = None
        self.last_used = time.monotonic()
        self._reader: asyncio.StreamReader | None = None
        self._read_transport: asyncio.ReadTransport | None = None
        self._write_transport: asyncio.WriteTransport | None = None
        self._log: IO[bytes] | None = None
        self._log_trimmer: asyncio.TimerHandle | None = None
        self._log_kept_tail = b""  # the log's last bytes before it was last emptied, during this invocation
        self._init_duration_ms: float | None = None
        # The resident size (KiB) past which the worker is stopped, as it reported it on starting (its size
        # before the handler is imported, plus the memory size); None until then.
        self._resident_limit_kb: int | None = None
        self._watching_memory = False  # while the handler is imported, and while an invocation runs
        self._out_of_memory = False  # the memory watch killed it
        self._pipe_ends: tuple[int, int] | None = None  # ours, between spawning and connecting them to the loop
        # False once the worker cannot take another invocation (it ended, timed out, or will exit).
        self._usable = True

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def usable(self) -> bool:
        """Whether the worker can take another invocation."""
        if not self._usable:
            return False
        if self.process is not None and (self.process.poll() is not None or self._reader_at_eof()):
            self._usable = False
        return self._usable

    def _reader_at_eof(self) -> bool:
        return self._reader is not None and self._reader.at_eof()

    async def invoke(self, request: InvocationRequest) -> HandlerOutcome:
        """Run one invocation (starting the process first if it is new); errors come back as Lambda reports them."""
        try:
            if self.process is None:
                failed = await self._start(request.request_id)
                if failed is not None:
                    return failed
            return await self._run(request)
        except BaseException:
            # Cancelled mid-invocation (the runtime is stopping): a reply may still arrive, so never reuse it.
            self.kill()
            raise

    async def _start(self, request_id: str) -> HandlerOutcome | None:
        """Start the process and wait until the handler is imported; an outcome only when that fails."""
        started = time.perf_counter()
        try:
            self._spawn()
        except OSError as error:  # such as a version folder removed since the manifest was read
            name = f"{self.version.function_name}:{self.version.version}"
            raise ServiceFailure(f"Cannot start a worker for {name}: {error}") from error
        self._schedule_log_trim()
        try:
            async with asyncio.timeout(INIT_TIMEOUT_SECONDS):
                await self._connect_pipes()
                metadata, body = await self._read_message()
                if metadata.get("kind") == "limits":  # sent before the handler is imported
                    self._resident_limit_kb = metadata.get("resident_limit_kb")
                    self._watching_memory = True
                    metadata, body = await self._read_message()
        except TimeoutError:
            await self._end()
            message = f"RequestId: {request_id} Error: Init timed out after {INIT_TIMEOUT_SECONDS:.2f} seconds"
            return _error_outcome("Sandbox.Timedout", message, output=self._output_tail(), platform_log=message)
        except (asyncio.IncompleteReadError, ConnectionError):
            return self._exit_outcome(request_id, await self._end(), duration_ms=0.0, init_duration_ms=None)
        finally:
            self._watching_memory = False
            self._cancel_log_trim()
        self._init_duration_ms = (time.perf_counter() - started) * 1000
        if metadata.get("kind") != "init_error":
            return None
        # Lambda reports an initialisation error on the invocation, and initialises afresh on the next one.
        await self._end()
        init_error = json.loads(body)
        return HandlerOutcome(
            payload=body,
            function_error="Unhandled",
            output=self._output_tail(),
            duration_ms=0.0,
            init_duration_ms=self._init_duration_ms,
            memory_used_mb=None,
            error_type=init_error.get("errorType"),
        )

    def _spawn(self) -> None:
        self._log = tempfile.TemporaryFile(prefix="local-lambda-")  # noqa: SIM115 (kept open until stop())
        log_fd = self._log.fileno()
        # O_APPEND, so that after the runtime truncates the file for the next invocation the worker's writes
        # land at the new end rather than at its old offset.
        fcntl.fcntl(log_fd, fcntl.F_SETFL, fcntl.fcntl(log_fd, fcntl.F_GETFL) | os.O_APPEND)
        request_read, request_write = os.pipe()
        reply_read, reply_write = os.pipe()
        self._pipe_ends = (request_write, reply_read)
        try:
            self.process = subprocess.Popen(
                self._launch.command(
                    WORKER_SCRIPT, [str(request_read), str(reply_write), str(self.version.memory_size)]
                ),
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                pass_fds=(request_read, reply_write),
                cwd=self.version.code_dir,
                env=self._environment,
                # Its own process group, so that ending the worker also ends the processes its handler started
                # (Lambda's sandbox takes them all with it) instead of leaving them running.
                process_group=0,
            )
        except BaseException:
            os.close(request_write)
            os.close(reply_read)
            self._pipe_ends = None
            self._usable = False
            raise
        finally:
            os.close(request_read)
            os.close(reply_write)

    async def _connect_pipes(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._pipe_ends is not None
        request_write, reply_read = self._pipe_ends
        self._pipe_ends = None
        request_file, reply_file = _pipe_file(request_write, "wb"), _pipe_file(reply_read, "rb")
        self._reader = asyncio.StreamReader(loop=loop)
        reader_protocol = asyncio.StreamReaderProtocol(self._reader, loop=loop)
        try:
            self._read_transport, _ = await loop.connect_read_pipe(lambda: reader_protocol, reply_file)
        except BaseException:
            # Cancelled (the runtime is stopping): asyncio closes the transport it made, and its pipe, but the
            # request pipe is not a transport's yet. (Once one is, only the transport may close it: closing a
            # pipe under a transport leaves the loop watching a number the next opened file may get.)
            request_file.close()
            raise
        self._write_transport, _ = await loop.connect_write_pipe(asyncio.BaseProtocol, request_file)

    async def _read_message(self) -> tuple[dict[str, Any], bytes]:
        assert self._reader is not None
        metadata_size, body_size = decode_lengths(await self._reader.readexactly(HEADER_BYTES))
        metadata = json.loads(await self._reader.readexactly(metadata_size))
        body = await self._reader.readexactly(body_size) if body_size else b""
        return metadata, body

    async def _run(self, request: InvocationRequest) -> HandlerOutcome:
        assert self._log is not None
        assert self._write_transport is not None
        init_duration_ms, self._init_duration_ms = self._init_duration_ms, None
        os.ftruncate(self._log.fileno(), 0)
        self._log_kept_tail = b""
        metadata = {
            "request_id": request.request_id,
            "invoked_function_arn": request.invoked_function_arn,
            "client_context": request.client_context,
            "deadline_ms": time.time() * 1000 + request.timeout_seconds * 1000,
            "trace_id": request.trace_id,
            "max_response_bytes": request.max_response_bytes,
        }
        started = time.perf_counter()
        self._write_transport.write(encode_message(metadata, request.payload))
        self._watching_memory = True
        self._schedule_log_trim()
        try:
            async with asyncio.timeout(request.timeout_seconds):
                reply, body = await self._read_message()
        except TimeoutError:
            duration_ms = (time.perf_counter() - started) * 1000
            await self._end()
            message = (
                f"RequestId: {request.request_id} Error: Task timed out after {request.timeout_seconds:.2f} seconds"
            )
            return _error_outcome(
                "Sandbox.Timedout",
                message,
                output=self._output_tail(),
                duration_ms=duration_ms,
                init_duration_ms=init_duration_ms,
                platform_log=f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%S.%fZ} {request.request_id} "
                f"Task timed out after {request.timeout_seconds:.2f} seconds",
            )
        except (asyncio.IncompleteReadError, ConnectionError):
            duration_ms = (time.perf_counter() - started) * 1000
            returncode = await self._end()
            return self._exit_outcome(request.request_id, returncode, duration_ms, init_duration_ms)
        finally:
            self._watching_memory = False
            self._cancel_log_trim()
        duration_ms = (time.perf_counter() - started) * 1000
        if reply.get("exiting"):
            self._usable = False
        error_type = None
        if reply.get("kind") == "error":
            error_type = json.loads(body).get("errorType")
        return HandlerOutcome(
            payload=body,
            function_error="Unhandled" if reply.get("kind") == "error" else None,
            output=self._output_tail(),
            duration_ms=duration_ms,
            init_duration_ms=init_duration_ms,
            memory_used_mb=reply.get("memory_used_mb"),
            error_type=error_type,
            content_type=reply.get("content_type", JSON_CONTENT_TYPE),
        )

    def _exit_outcome(
        self, request_id: str, returncode: int | None, duration_ms: float, init_duration_ms: float | None
    ) -> HandlerOutcome:
        """The outcome of a worker that ended without answering: killed for its memory, or on its own."""
        message = exit_message(request_id, returncode)
        if self._out_of_memory:
            # As Lambda reports a function its sandbox's memory limit stopped: the runtime was killed.
            return replace(
                _error_outcome(
                    "Runtime.OutOfMemory",
                    message,
                    output=self._output_tail(),
                    duration_ms=duration_ms,
                    init_duration_ms=init_duration_ms,
                    platform_log=f"{message}\nRuntime.OutOfMemory",
                ),
                memory_used_mb=self.version.memory_size,
            )
        return _error_outcome(
            "Runtime.ExitError",
            message,
            output=self._output_tail(),
            duration_ms=duration_ms,
            init_duration_ms=init_duration_ms,
            platform_log=message,
        )

    def _output_tail(self) -> bytes:
        """The last LOG_TAIL_BYTES the handler wrote since the invocation began."""
        if self._log is None:
            return b""
        fd = self._log.fileno()
        size = os.fstat(fd).st_size
        tail = os.pread(fd, min(size, LOG_TAIL_BYTES), max(0, size - LOG_TAIL_BYTES)) if size else b""
        if len(tail) < LOG_TAIL_BYTES and self._log_kept_tail:
            tail = (self._log_kept_tail + tail)[-LOG_TAIL_BYTES:]
        return tail

    def _schedule_log_trim(self) -> None:
        self._log_trimmer = asyncio.get_running_loop().call_later(LOG_TRIM_INTERVAL_SECONDS, self._trim_log)

    def _cancel_log_trim(self) -> None:
        if self._log_trimmer is not None:
            self._log_trimmer.cancel()
            self._log_trimmer = None

    def _trim_log(self) -> None:
        """Past LOG_FILE_MAX_BYTES, keep the log's tail in memory and empty the file; then check again later.

        The worker's memory is checked at the same time (see _check_memory).
        """
        if self._log is None:
            return
        if self._check_memory():
            return
        fd = self._log.fileno()
        if os.fstat(fd).st_size > LOG_FILE_MAX_BYTES:
            # What the handler writes between reading the tail and emptying the file is lost. It lies within
            # megabytes of output of which only the last LOG_TAIL_BYTES are reported, so it can only show as a
            # gap in the tail when the handler stops writing just after.
            self._log_kept_tail = self._output_tail()
            os.ftruncate(fd, 0)
        self._schedule_log_trim()

    def _check_memory(self) -> bool:
        """Kill the worker when its handler (being imported, or running) went past its memory size; whether it did.

        Lambda's sandbox is a cgroup the kernel stops the moment it is full. This check is the portable kind:
        the resident size sampled as often as the log is checked. A handler allocating faster than that can go
        past the size for one interval (and the worker's allocation ceiling, RLIMIT_DATA, still stops a runaway
        one at once); its peak is also checked after each invocation, so no overrun goes unreported.
        """
        if not self._watching_memory or self._resident_limit_kb is None or self.process is None:
            return False
        resident = resident_kb(self.process.pid)
        if resident is None or resident <= self._resident_limit_kb:
            return False
        logger.info(
            "worker %s of %s: %s MB resident, over its %s MB; killing it",
            self.pid,
            self.version.function_name,
            resident // 1024,
            self.version.memory_size,
        )
        self._out_of_memory = True
        self.kill()
        return True

    def kill(self) -> None:
        """Kill the process and whatever its handler started, at once, without waiting (`stop` reaps it)."""
        self._usable = False
        if self.process is not None:
            self._kill_process_group()

    def _kill_process_group(self) -> None:
        assert self.process is not None
        # Even after the worker itself has ended: the processes its handler started are still in its group.
        # The group's number is the worker's pid, not handed out again while any process of the group remains
        # (and pids are handed out in turn, so not in the moment after the last one ends either).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    async def _end(self) -> int | None:
        """Kill the process if it still runs, wait for it, and close the pipes; its return code."""
        self._usable = False
        self._close_pipes()
        if self.process is None:
            return None
        self.kill()
        return await wait_for_exit(self.process)

    def _close_pipes(self) -> None:
        if self._write_transport is not None:
            self._write_transport.close()
        if self._read_transport is not None:
            self._read_transport.close()
        if self._pipe_ends is not None:
            for fd in self._pipe_ends:
                os.close(fd)
            self._pipe_ends = None

    async def stop(self) -> None:
        """End the worker: closing its request pipe lets it leave on its own; it is killed if it does not."""
        self._usable = False
        if self._write_transport is not None:
            self._write_transport.close()
        if self.process is not None and self.process.poll() is None:
            try:
                async with asyncio.timeout(STOP_GRACE_SECONDS):
                    await wait_for_exit(self.process)
            except TimeoutError:
                logger.warning("worker %s of %s did not stop in time; killing it", self.pid, self.version.function_name)
        await self._end()
        if self._log is not None:
            self._log.close()
            self._log = None


class WorkerPool:
    """The workers of one function: at most `concurrency` at once, whatever versions they run."""

    def __init__(self, function_name: str) -> None:
        self.function_name = function_name
        self._idle: list[Worker] = []  # least recently used first
        self._busy: set[Worker] = set()
        self._stopping: set[asyncio.Task[None]] = set()

    @property
    def workers(self) -> list[Worker]:
        """Every worker, idle or busy."""
        return [*self._idle, *self._busy]

    def acquire(
        self, key: WorkerKey, version: FunctionVersion, launch: Callable[[], WorkerLaunch], concurrency: int
    ) -> Worker:
        """A worker for `key`: a warm one when one is idle, else a new one; TooManyRequests when all are busy."""
        if len(self._busy) >= concurrency:
            raise TooManyRequests("Rate Exceeded.", reason="ReservedFunctionConcurrentInvocationLimitExceeded")
        # Workers that ended, or that run an older state of this version's code, will not be asked again.
        for worker in [
            w for w in self._idle if not w.usable or (w.version.version == version.version and w.key != key)
        ]:
            self._idle.remove(worker)
            self._retire(worker)
        for index in range(len(self._idle) - 1, -1, -1):  # the most recently used first: the warmest caches
            if self._idle[index].key == key:
                worker = self._idle.pop(index)
                break
        else:
            # Room for a new worker: retire the least recently used idle ones (other versions) beyond the limit.
            while self._idle and len(self._idle) + len(self._busy) >= concurrency:
                self._retire(self._idle.pop(0))
            worker = Worker(key, version, launch())
        self._busy.add(worker)
        return worker

    def release(self, worker: Worker) -> None:
        """Give a worker back after an invocation: kept warm if it can go on, retired if not."""
        self._busy.discard(worker)
        if worker.usable:
            worker.last_used = time.monotonic()
            self._idle.append(worker)
        else:
            self._retire(worker)

    def oldest_idle(self) -> float | None:
        """When the least recently used idle worker was last used (time.monotonic()); None when none is idle."""
        return self._idle[0].last_used if self._idle else None

    def retire_oldest_idle(self) -> None:
        """Retire the least recently used idle worker, to make room for another function's."""
        if self._idle:
            self._retire(self._idle.pop(0))

    def retire_idle(self, idle_seconds: float) -> None:
        """Retire the workers idle for longer than `idle_seconds`, as Lambda reclaims unused sandboxes."""
        cutoff = time.monotonic() - idle_seconds
        for worker in [w for w in self._idle if w.last_used < cutoff]:
            self._idle.remove(worker)
            self._retire(worker)

    def _retire(self, worker: Worker) -> None:
        task = asyncio.create_task(worker.stop(), name=f"stop worker {worker.pid} of {self.function_name}")
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def close(self) -> None:
        """Stop every worker, busy ones included, and wait until they have all ended."""
        workers = self.workers
        self._idle.clear()
        self._busy.clear()
        for worker in workers:
            worker.kill()  # busy ones too: nothing waits for their answers any more
        stops = [asyncio.create_task(worker.stop()) for worker in workers]
        await asyncio.gather(*stops, *self._stopping, return_exceptions=True)
