"""LambdaRuntime: Lambda's operations over a folder of Python functions, run in warm worker processes."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from local_lambda.concurrency import ConcurrencyLimits
from local_lambda.dependencies import DependencyCache
from local_lambda.errors import (
    InvalidParameterValue,
    InvalidRequestContent,
    RequestEntityTooLarge,
    ResourceNotFound,
)
from local_lambda.events import EventInvokeConfig, EventQueue
from local_lambda.interpreters import Interpreter, Interpreters
from local_lambda.invocation_log import invocation_log
from local_lambda.logs import RecentLogs
from local_lambda.manifest import LATEST, FunctionVersion
from local_lambda.pool import (
    WORKER_SCRIPT,
    HandlerOutcome,
    InvocationRequest,
    WorkerPool,
)
from local_lambda.publish import publish_latest
from local_lambda.registry import (
    FunctionConfiguration,
    FunctionListing,
    FunctionRegistry,
    ResolvedFunction,
    function_arn,
    unqualified_name,
)
from local_lambda.sandbox import SandboxFolders, WorkerLaunch, sandbox_identity
from local_lambda.settings import RuntimeSettings, runtime_settings

logger = logging.getLogger(__name__)

INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")
MAX_SYNC_PAYLOAD_BYTES = 6 * 1024 * 1024
MAX_EVENT_PAYLOAD_BYTES = 1024 * 1024
# Lambda's response limit: 6 MB, and the 100 bytes more that AWS lets through.
MAX_RESPONSE_BYTES = 6 * 1024 * 1024 + 100
MAX_CLIENT_CONTEXT_BYTES = 3583
LOG_RESULT_BYTES = 4096
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
class FunctionDetails:
    """GetFunction's answer: the configuration, the code's location, and the reservation when there is one."""

    configuration: FunctionConfiguration
    code_location: str  # a file: URI of the version's code folder
    reserved_concurrency: int | None


@dataclass(frozen=True)
class RuntimeAnswer:
    """Invoke's answer: the status (200, 202, 204), the payload and the headers Lambda sets."""

    status: int
    payload: bytes = b""
    executed_version: str | None = None
    function_error: str | None = None
    log_result: str | None = None  # base64 of the log's last 4 KB, when LogType=Tail
    content_type: str = "application/json"


class LambdaRuntime:
    """Lambda's invoke and function operations over a folder of functions, run in warm worker processes.

    It knows nothing of HTTP: `local_lambda.server` serves it as the Lambda API. `await open()` starts its
    background work, `await close()` stops every worker.
    """

    def __init__(
        self,
        functions_dir: Path | str,
        region: str = "us-east-1",
        settings: RuntimeSettings | None = None,
        cache_dir: Path | str = DEFAULT_CACHE_DIR,
    ) -> None:
        self.functions_dir = Path(functions_dir).resolve()
        self.region = region
        self.settings = runtime_settings(os.environ) if settings is None else settings
        self.cache_dir = Path(cache_dir).resolve()
        self.dependencies = DependencyCache(self.cache_dir / "dependencies")
        self.interpreters = Interpreters(self.settings.interpreters)
        self._sandbox = SandboxFolders(sandbox_identity())
        # (function, runtime) pairs whose log has said that they run on another Python than they ask for.
        self._interpreter_noticed: set[tuple[str, str]] = set()
        self.registry = FunctionRegistry(self.functions_dir, region)
        self._pools: dict[str, WorkerPool] = {}
        # Each function's reservation as of its last call: whose idle workers may be retired to keep within limits.
        self._reservations: dict[str, int | None] = {}
        self.concurrency = ConcurrencyLimits(self.settings.max_concurrency)
        self.events = EventQueue(
            self._run_event, region, self.settings.event_retry_delays, self.settings.dead_letter_dir
        )
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
        await self.events.close()
        tasks = [self._idle_check] if self._idle_check else []
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
        if invocation_type == "Event" and len(payload) > MAX_EVENT_PAYLOAD_BYTES:
            raise RequestEntityTooLarge(
                f"{len(payload)} byte payload is too large for the Event invocation type "
                f"(limit {MAX_EVENT_PAYLOAD_BYTES} bytes)"
            )
        if len(payload) > MAX_SYNC_PAYLOAD_BYTES:
            # AWS refuses an oversized synchronous request before Lambda sees it.
            raise RequestEntityTooLarge(
                f"Request must be smaller than {MAX_SYNC_PAYLOAD_BYTES} bytes for the Invoke operation"
            )
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
            self.events.queue(resolved, request_id, payload, context_json, trace_id)
            return RuntimeAnswer(202)

        outcome = await self._run(resolved, request_id, payload, context_json, trace_id=trace_id)
        log_result = None
        if log_type == "Tail":
            log = invocation_log(request_id, resolved.version, outcome)
            log_result = base64.b64encode(log[-LOG_RESULT_BYTES:]).decode()
        return RuntimeAnswer(
            200, outcome.payload, resolved.version.version, outcome.function_error, log_result, outcome.content_type
        )

    def get_function_configuration(self, function_name: str, qualifier: str | None = None) -> FunctionConfiguration:
        """What Lambda reports of a function name (or ARN) and qualifier."""
        return self.registry.configuration(self.registry.resolve(function_name, qualifier))

    def list_functions(
        self, max_items: int | None = None, marker: str | None = None, all_versions: bool = False
    ) -> FunctionListing:
        """A page of configurations sorted by name, with the next page's marker when more remain."""
        return self.registry.list_functions(max_items, marker, all_versions)

    def get_function(self, function_name: str, qualifier: str | None = None) -> FunctionDetails:
        """What GetFunction reports: the configuration, where the code is, the reserved concurrency."""
        resolved = self.registry.resolve(function_name, qualifier)
        return FunctionDetails(
            self.registry.configuration(resolved),
            resolved.version.code_dir.as_uri(),
            resolved.manifest.reserved_concurrency,
        )

    def get_event_invoke_config(self, function_name: str, qualifier: str | None = None) -> EventInvokeConfig:
        """How the function's failed Event invocations are retried, when its manifest says; else ResourceNotFound."""
        resolved = self.registry.resolve(function_name, qualifier)
        manifest = resolved.manifest
        arn = function_arn(self.region, manifest.name, resolved.qualifier or LATEST)
        if not manifest.event_invoke_configured:
            raise ResourceNotFound(f"The function {arn} doesn't have an EventInvokeConfig")
        return EventInvokeConfig(
            arn, manifest.maximum_retry_attempts, manifest.maximum_event_age_seconds, manifest.modified_ns / 1e9
        )

    def list_versions(
        self, function_name: str, max_items: int | None = None, marker: str | None = None
    ) -> FunctionListing:
        """A page of a function's versions, $LATEST first (ListVersionsByFunction)."""
        return self.registry.list_versions(function_name, max_items, marker)

    async def publish_version(
        self,
        function_name: str,
        description: str | None = None,
        *,
        code_sha256: str | None = None,
        revision_id: str | None = None,
    ) -> FunctionConfiguration:
        """Publish $LATEST as a new version (or answer the last one, unchanged since): that version's configuration."""
        name = unqualified_name(function_name)
        # Copying the code may take a while for a large folder: not on the loop.
        number = await asyncio.to_thread(
            publish_latest,
            self.registry,
            name,
            description,
            expected_code_sha256=code_sha256,
            expected_revision_id=revision_id,
        )
        return self.registry.configuration(self.registry.resolve(name, number))

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
        worker_wait_seconds: float | None = None,
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

        reservation = manifest.reserved_concurrency
        self._reservations[manifest.name] = reservation
        reserved_total = self.registry.reserved_concurrency_total()
        if worker_wait_seconds is not None:
            slot = await self.concurrency.wait_for(manifest.name, reservation, reserved_total, worker_wait_seconds)
        else:
            slot = self.concurrency.take(manifest.name, reservation, reserved_total)
        try:
            # Admitted, so the pool has room: its limit is the one the call was counted against.
            limit = reservation if reservation is not None else self.concurrency.shared_pool(reserved_total)
            worker = pool.acquire(key, version, launch, max(1, limit))
        except BaseException:
            slot.release()
            raise
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
            slot.release()
            self._keep_workers_within_limit()
        if interpreter.notice and (manifest.name, version.runtime) not in self._interpreter_noticed:
            self._interpreter_noticed.add((manifest.name, version.runtime))
            outcome = replace(outcome, output=f"{interpreter.notice}\n".encode() + outcome.output)
        self.logs.add(manifest.name, version.version, request_id, invocation_log(request_id, version, outcome))
        if outcome.error_type is not None:
            logger.info("%s:%s request %s failed: %s", manifest.name, version.version, request_id, outcome.error_type)
        if outcome.output and logger.isEnabledFor(logging.DEBUG):
            output = outcome.output.decode(errors="replace")
            logger.debug("%s:%s request %s output:\n%s", manifest.name, version.version, request_id, output)
        return outcome

    def _keep_workers_within_limit(self) -> None:
        """Retire the least recently used idle workers while functions hold more than they may run at once.

        Idle workers hold memory as busy ones do: without this, every function that once had a burst would keep
        that many workers for IDLE_WORKER_SECONDS, far more in all than the host holds. A reserved function keeps
        workers up to its reservation (that capacity is guaranteed to it, as on Lambda); the unreserved functions
        together keep at most the shared pool.
        """
        reserved_total = self.registry.reserved_concurrency_total()
        unreserved: list[WorkerPool] = []
        for name, pool in self._pools.items():
            reservation = self._reservations.get(name)
            if reservation is None:
                unreserved.append(pool)
                continue
            extra = len(pool.workers) - max(1, reservation)
            while extra > 0 and pool.oldest_idle() is not None:
                pool.retire_oldest_idle()
                extra -= 1
        total = sum(len(pool.workers) for pool in unreserved)
        allowed = max(1, self.concurrency.shared_pool(reserved_total))
        while total > allowed:
            candidates = [(last_used, pool) for pool in unreserved if (last_used := pool.oldest_idle()) is not None]
            if not candidates:
                return  # all busy: they end within the limit as their calls end
            min(candidates, key=lambda candidate: candidate[0])[1].retire_oldest_idle()
            total -= 1

    async def _run_event(
        self,
        resolved: ResolvedFunction,
        request_id: str,
        payload: bytes,
        client_context: str | None,
        trace_id: str,
        worker_wait_seconds: float,
    ) -> HandlerOutcome:
        """One attempt at an Event invocation: it waits for a free worker (up to a while) rather than be refused."""
        return await self._run(
            resolved, request_id, payload, client_context, worker_wait_seconds=worker_wait_seconds, trace_id=trace_id
        )

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
