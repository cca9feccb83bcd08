"""LambdaRuntime: Lambda's operations over a folder of Python functions, run in warm worker processes."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import os
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from local_lambda.dependencies import DependencyCache
from local_lambda.errors import (
    InvalidParameterValue,
    InvalidRequestContent,
    RequestEntityTooLarge,
    RequestTooLarge,
    TooManyRequests,
)
from local_lambda.interpreters import Interpreter, Interpreters
from local_lambda.logs import RecentLogs
from local_lambda.manifest import FunctionVersion
from local_lambda.pool import (
    WORKER_SCRIPT,
    HandlerOutcome,
    InvocationRequest,
    WorkerPool,
)
from local_lambda.registry import (
    FunctionConfiguration,
    FunctionListing,
    FunctionRegistry,
    ResolvedFunction,
    function_arn,
)
from local_lambda.sandbox import SandboxFolders, WorkerLaunch, sandbox_identity

logger = logging.getLogger(__name__)

INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")
MAX_SYNC_PAYLOAD_BYTES = 6 * 1024 * 1024
MAX_EVENT_PAYLOAD_BYTES = 1024 * 1024
# Lambda's response limit: 6 MB, and the 100 bytes more that AWS lets through.
MAX_RESPONSE_BYTES = 6 * 1024 * 1024 + 100
MAX_CLIENT_CONTEXT_BYTES = 3583
LOG_RESULT_BYTES = 4096
# Event invocations wait for a free worker instead of being refused; past this many waiting for one function,
# new ones are refused, so that a stuck function cannot make the runtime hold payloads without end.
MAX_QUEUED_EVENTS = 1000
# Lambda reclaims sandboxes left unused for a while; idle workers are retired after this long.
IDLE_WORKER_SECONDS = 600.0
_IDLE_CHECK_SECONDS = 30.0
# What workers inherit from the runtime's environment: what a handler needs to run and to reach AWS like a
# Lambda function does (Lambda gives it credentials), but not the gateway's own secrets or settings. Not HOME,
# which Lambda leaves unset (and which would lead boto3 to the host's ~/.aws), nor TMPDIR: each function has
# its own.
_INHERITED_VARIABLES = ("PATH", "LC_ALL", "LC_CTYPE", "SSL_CERT_FILE", "SSL_CERT_DIR")
# Endpoints a function may be pointed at (a local DynamoDB, say) pass through; the host's credentials do not.
_INHERITED_PREFIX = "AWS_ENDPOINT_URL"
# Where the runtime keeps what it builds (the functions' installed requirements), unless told otherwise.
DEFAULT_CACHE_DIR = Path("data/local-lambda")
# Lambda's PATH; the host's own folders follow, so that tools a handler runs are still found here.
LAMBDA_PATH = "/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin"
# What a function's code sees instead of the runtime's credentials, unless its manifest gives its own.
FUNCTION_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local-function",
    "AWS_SECRET_ACCESS_KEY": "local-function",
    "AWS_SESSION_TOKEN": "local-function",
}


@dataclass(frozen=True)
class RuntimeAnswer:
    """Invoke's answer: the status (200, 202, 204), the payload and the headers Lambda sets."""

    status: int
    payload: bytes = b""
    executed_version: str | None = None
    function_error: str | None = None
    log_result: str | None = None  # base64 of the log's last 4 KB, when LogType=Tail


class LambdaRuntime:
    """Lambda's invoke and function operations over a folder of functions, run in warm worker processes.

    It knows nothing of HTTP: `local_lambda.server` serves it as the Lambda API. `await open()` starts its
    background work, `await close()` stops every worker.
    """

    def __init__(
        self, functions_dir: Path | str, region: str = "us-east-1", cache_dir: Path | str = DEFAULT_CACHE_DIR
    ) -> None:
        self.functions_dir = Path(functions_dir).resolve()
        self.region = region
        self.cache_dir = Path(cache_dir).resolve()
        self.dependencies = DependencyCache(self.cache_dir / "dependencies")
        self.interpreters = Interpreters()
        self._sandbox = SandboxFolders(sandbox_identity())
        # (function, runtime) pairs whose log has said that they run on another Python than they ask for.
        self._interpreter_noticed: set[tuple[str, str]] = set()
        self.registry = FunctionRegistry(self.functions_dir, region)
        self._pools: dict[str, WorkerPool] = {}
        self._events: set[asyncio.Task[None]] = set()
        self._queued_events: Counter[str] = Counter()
        self._idle_check: asyncio.Task[None] | None = None
        # The last invocations' logs, for FilterLogEvents on /aws/lambda/<name> (see local_lambda/logs.py).
        self.logs = RecentLogs()
        # host:port of the API, set once it is served (AWS_LAMBDA_RUNTIME_API).
        self.runtime_api = "127.0.0.1:9001"

    async def open(self) -> None:
        """Start retiring idle workers in the background."""
        if not self.functions_dir.is_dir():
            logger.warning("functions folder %s does not exist (yet): no functions to serve", self.functions_dir)
        self._idle_check = asyncio.create_task(self._retire_idle_workers(), name="local-lambda idle workers")

    async def close(self) -> None:
        """Cancel queued events and stop every worker."""
        tasks = [*self._events, *([self._idle_check] if self._idle_check else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._idle_check = None
        pools, self._pools = list(self._pools.values()), {}
        await asyncio.gather(*(pool.close() for pool in pools))
        self._sandbox.remove()

    async def _retire_idle_workers(self) -> None:
        while True:
            await asyncio.sleep(_IDLE_CHECK_SECONDS)
            for pool in self._pools.values():
                pool.retire_idle(IDLE_WORKER_SECONDS)

    # -- operations ----------------------------------------------------------------------------------------

    async def invoke(
        self,
        function_name: str,
        payload: bytes,
        *,
        qualifier: str | None = None,
        invocation_type: str = "RequestResponse",
        log_type: str | None = None,
        client_context: str | None = None,
        request_id: str | None = None,
        trace_id: str | None = None,
    ) -> RuntimeAnswer:
        """Invoke as Lambda does: RequestResponse runs and answers, Event answers 202 and runs, DryRun checks."""
        if invocation_type not in INVOCATION_TYPES:
            raise InvalidParameterValue(f"InvocationType must be one of {', '.join(INVOCATION_TYPES)}")
        if log_type not in (None, "None", "Tail"):
            raise InvalidParameterValue("LogType must be None or Tail")
        limit = MAX_EVENT_PAYLOAD_BYTES if invocation_type == "Event" else MAX_SYNC_PAYLOAD_BYTES
        if len(payload) > limit:
            # AWS refuses an oversized synchronous request before Lambda sees it, under another error name.
            refused = RequestTooLarge if invocation_type == "Event" else RequestEntityTooLarge
            raise refused(f"Request must be smaller than {limit} bytes for the Invoke operation")
        resolved = self.registry.resolve(function_name, qualifier)
        try:
            json.loads(payload or b"{}")
        except (ValueError, RecursionError) as error:  # RecursionError: nested deeper than Python can parse
            raise InvalidRequestContent(f"Could not parse request body into json: {error}") from None
        context_json = _decode_client_context(client_context)
        request_id = request_id or str(uuid.uuid4())
        trace_id = trace_id or new_trace_id()
        if invocation_type == "DryRun":
            return RuntimeAnswer(204)
        if invocation_type == "Event":
            self._queue_event(resolved, request_id, payload, context_json, trace_id)
            return RuntimeAnswer(202)

        outcome = await self._run(resolved, request_id, payload, context_json, wait_for_worker=False, trace_id=trace_id)
        log_result = None
        if log_type == "Tail":
            log = _lambda_log(request_id, resolved.version, outcome)
            log_result = base64.b64encode(log[-LOG_RESULT_BYTES:]).decode()
        return RuntimeAnswer(200, outcome.payload, resolved.version.version, outcome.function_error, log_result)

    def get_function_configuration(self, function_name: str, qualifier: str | None = None) -> FunctionConfiguration:
        """What Lambda reports of a function name (or ARN) and qualifier."""
        return self.registry.configuration(self.registry.resolve(function_name, qualifier))

    def list_functions(
        self, max_items: int | None = None, marker: str | None = None, all_versions: bool = False
    ) -> FunctionListing:
        """A page of configurations sorted by name, with the next page's marker when more remain."""
        return self.registry.list_functions(max_items, marker, all_versions)

    def worker_pids(self, function_name: str) -> list[int]:
        """The process ids of a function's workers, idle or busy (for tests and diagnostics)."""
        pool = self._pools.get(function_name)
        return [] if pool is None else [worker.pid for worker in pool.workers if worker.pid is not None]

    # -- running -------------------------------------------------------------------------------------------

    async def _run(
        self,
        resolved: ResolvedFunction,
        request_id: str,
        payload: bytes,
        client_context: str | None,
        *,
        wait_for_worker: bool,
        trace_id: str = "",
    ) -> HandlerOutcome:
        version, manifest = resolved.version, resolved.manifest
        interpreter = await self._interpreter(version.runtime)
        packages = await self.dependencies.packages_for(version.code_dir, interpreter, version.function_name)
        # The code's fingerprint is part of the key, so an edited file sends the next call to a fresh worker
        # (and the stale warm ones are retired); so are the settings a worker is started with.
        snapshot = self.registry.snapshot(version)
        key = (
            interpreter.path,
            str(packages),
            version.version,
            str(version.code_dir),
            snapshot.fingerprint,
            version.handler,
            version.memory_size,
            version.environment,
            version.log_format,
            version.application_log_level,
        )
        pool = self._pools.get(manifest.name)
        if pool is None:
            pool = self._pools[manifest.name] = WorkerPool(manifest.name)

        def launch() -> WorkerLaunch:
            return self._worker_launch(version, interpreter, packages)

        if wait_for_worker:
            worker = await pool.acquire_waiting(key, version, launch, manifest.concurrency)
        else:
            worker = pool.acquire(key, version, launch, manifest.concurrency)
        request = InvocationRequest(
            request_id=request_id,
            payload=payload,
            invoked_function_arn=function_arn(self.region, manifest.name, resolved.qualifier),
            client_context=client_context,
            timeout_seconds=version.timeout,
            max_response_bytes=MAX_RESPONSE_BYTES,
            trace_id=trace_id,
        )
        try:
            outcome = await worker.invoke(request)
        finally:
            pool.release(worker)
        if interpreter.notice and (manifest.name, version.runtime) not in self._interpreter_noticed:
            self._interpreter_noticed.add((manifest.name, version.runtime))
            outcome = replace(outcome, output=f"{interpreter.notice}\n".encode() + outcome.output)
        self.logs.add(manifest.name, version.version, request_id, _lambda_log(request_id, version, outcome))
        if outcome.error_type is not None:
            logger.info("%s:%s request %s failed: %s", manifest.name, version.version, request_id, outcome.error_type)
        if outcome.output and logger.isEnabledFor(logging.DEBUG):
            output = outcome.output.decode(errors="replace")
            logger.debug("%s:%s request %s output:\n%s", manifest.name, version.version, request_id, output)
        return outcome

    def _queue_event(
        self, resolved: ResolvedFunction, request_id: str, payload: bytes, client_context: str | None, trace_id: str
    ) -> None:
        name = resolved.manifest.name
        if self._queued_events[name] >= MAX_QUEUED_EVENTS:
            raise TooManyRequests("Rate Exceeded.", reason="ReservedFunctionConcurrentInvocationLimitExceeded")
        self._queued_events[name] += 1
        task = asyncio.create_task(self._run_event(resolved, request_id, payload, client_context, trace_id))
        self._events.add(task)
        task.add_done_callback(self._events.discard)

    async def _run_event(
        self, resolved: ResolvedFunction, request_id: str, payload: bytes, client_context: str | None, trace_id: str
    ) -> None:
        name = resolved.manifest.name
        try:
            outcome = await self._run(
                resolved, request_id, payload, client_context, wait_for_worker=True, trace_id=trace_id
            )
        except Exception:
            logger.exception("Event invocation %s of %s failed", request_id, name)
            return
        finally:
            self._queued_events[name] -= 1
        if outcome.function_error:
            logger.warning("Event invocation %s of %s failed: %s", request_id, name, outcome.payload[:1000])

    async def _interpreter(self, runtime: str) -> Interpreter:
        known = self.interpreters.known(runtime)
        if known is not None:
            return known
        # The first time, candidates are run to ask their version: not on the loop.
        return await asyncio.to_thread(self.interpreters.for_runtime, runtime)

    def _worker_launch(self, version: FunctionVersion, interpreter: Interpreter, packages: Path | None) -> WorkerLaunch:
        """How a worker of `version` starts: its interpreter, environment, imports and user."""
        import_paths = [str(self._sandbox.provided_packages())]
        if packages is not None:
            import_paths.insert(0, str(packages))
        return WorkerLaunch(
            interpreter=interpreter.path,
            environment=self._worker_environment(version),
            import_paths=tuple(import_paths),
            identity=self._sandbox.identity,
            # The runtime's own Python has the provided packages' bytecode already; another one has not.
            bytecode_dir=None
            if interpreter.path == sys.executable
            else str(self._sandbox.function_bytecode(version.function_name)),
        )

    def _worker_environment(self, version: FunctionVersion) -> dict[str, str]:
        """A worker's environment: a few inherited variables, the function's own, and those Lambda sets."""
        environment = {
            name: value
            for name, value in os.environ.items()
            if name in _INHERITED_VARIABLES or name.startswith(_INHERITED_PREFIX)
        }
        host_path = [folder for folder in environment.get("PATH", "").split(os.pathsep) if folder]
        lambda_path = LAMBDA_PATH.split(":")
        environment["PATH"] = ":".join([*lambda_path, *(folder for folder in host_path if folder not in lambda_path)])
        environment["LANG"] = "en_US.UTF-8"
        environment.update(FUNCTION_CREDENTIALS)
        environment.update(version.environment)
        if version.application_log_level is not None:
            environment["AWS_LAMBDA_LOG_LEVEL"] = version.application_log_level
        environment.update(
            {
                "_HANDLER": version.handler,
                "LAMBDA_TASK_ROOT": str(version.code_dir),
                # Lambda's working directory is the code folder, and its Python runtime is started from a shell.
                "PWD": str(version.code_dir),
                "TMPDIR": str(self._sandbox.function_tmp(version.function_name)),
                "LAMBDA_RUNTIME_DIR": str(WORKER_SCRIPT.parent),
                "AWS_REGION": self.region,
                "AWS_DEFAULT_REGION": self.region,
                "AWS_EXECUTION_ENV": f"AWS_Lambda_{version.runtime}",
                "AWS_LAMBDA_FUNCTION_NAME": version.function_name,
                "AWS_LAMBDA_FUNCTION_VERSION": version.version,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(version.memory_size),
                "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{version.function_name}",
                "AWS_LAMBDA_RUNTIME_API": self.runtime_api,
                "AWS_LAMBDA_LOG_FORMAT": version.log_format,
                "TZ": ":UTC",
            }
        )
        return environment


def new_trace_id() -> str:
    """An X-Ray trace header for an invocation whose caller sent none, as Lambda starts one (not sampled)."""
    epoch = f"{int(time.time()):08x}"
    return f"Root=1-{epoch}-{uuid.uuid4().hex[:24]};Parent={uuid.uuid4().hex[:16]};Sampled=0"


def _decode_client_context(header: str | None) -> str | None:
    """The JSON text of an X-Amz-Client-Context header (base64 of a JSON object)."""
    if not header:
        return None
    if len(header) > MAX_CLIENT_CONTEXT_BYTES:
        raise InvalidRequestContent(f"Client context must be at most {MAX_CLIENT_CONTEXT_BYTES} bytes")
    try:
        text = base64.b64decode(header, validate=True).decode()
        if isinstance(json.loads(text), dict):
            return text
    except (binascii.Error, ValueError, RecursionError):
        pass
    raise InvalidRequestContent("Client context must be a valid Base64-encoded JSON object.")


def _lambda_log(request_id: str, version: FunctionVersion, outcome: HandlerOutcome) -> bytes:
    """The invocation's log as Lambda writes it: START, what the handler wrote, END and REPORT."""
    parts = [f"START RequestId: {request_id} Version: {version.version}\n".encode()]
    if outcome.output:
        parts.append(outcome.output if outcome.output.endswith(b"\n") else outcome.output + b"\n")
    if outcome.platform_log:
        parts.append(f"{outcome.platform_log}\n".encode())
    parts.append(f"END RequestId: {request_id}\n".encode())
    report = (
        f"REPORT RequestId: {request_id}\tDuration: {outcome.duration_ms:.2f} ms\t"
        f"Billed Duration: {max(1, math.ceil(outcome.duration_ms))} ms\tMemory Size: {version.memory_size} MB\t"
    )
    if outcome.memory_used_mb is not None:
        report += f"Max Memory Used: {outcome.memory_used_mb} MB\t"
    if outcome.init_duration_ms is not None:
        report += f"Init Duration: {outcome.init_duration_ms:.2f} ms\t"
    parts.append(f"{report}\n".encode())
    return b"".join(parts)
