"""LambdaService: every transport's one way to invoke, list and describe Lambda functions."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from config import Settings
from services import audit
from services.domain import (
    MAX_LIST_PAGE,
    Caller,
    FunctionInfo,
    FunctionPage,
    InvokeRequest,
    InvokeResult,
    Transport,
    check_alias,
    check_page_size,
    check_qualifier,
    check_version,
    function_name_of,
    invocation_type_of,
    owner_named_by,
    partition_of,
)
from services.errors import (
    ConcurrencyLimitReached,
    DatabaseUnavailable,
    DeadlineExceeded,
    Forbidden,
    IdempotencyKeyReused,
    InternalError,
    InvalidRequest,
    InvocationInProgress,
    JournalFull,
    OutcomeUnknown,
    PageNotFound,
    PayloadTooLarge,
    ServiceError,
    Throttled,
    UpstreamTimeout,
)
from services.idempotency import EarlierInvocation, KeyClaim, check_idempotency_key, fingerprint
from services.ids import new_id
from services.invocation_log import InvocationLog, InvocationOutcome, InvocationStart, JournalState, utc_now
from services.json_rules import parse_json
from services.lambda_client import (
    CONTROL_PLANE_THREADS,
    LOCAL_RUNTIME_ACCOUNT,
    RetryMode,
    RetryPolicy,
    caller_account,
    may_have_run,
    translate_error,
)
from services.metrics import Metrics
from services.policy import check_access, may_reach
from services.tracing import current_request_id, current_trace
from services.workers import Workers

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Lambda's payload limits: 6 MB for a synchronous request, 1 MB for an asynchronous one.
MAX_SYNC_PAYLOAD_BYTES = 6 * 1024 * 1024
MAX_ASYNC_PAYLOAD_BYTES = 1024 * 1024
MAX_CLIENT_CONTEXT_BYTES = 3583
# The client's read timeout is sized for invocations (LAMBDA_TIMEOUT and more); listing and describing
# functions must not keep a caller that long.
CONTROL_PLANE_TIMEOUT_SECONDS = 30.0
# Failures that mean the function did not run because something would not let it: counted as refused.
REFUSALS = (Throttled, Forbidden, JournalFull)
# Upper bound on Lambda pages read to fill one filtered page of ListFunctions.
_MAX_LIST_ROUNDS = 10


@dataclass(frozen=True)
class HealthReport:
    """What /health shows of the service."""

    database_ok: bool
    lambda_backend: dict[str, str]
    in_flight: int
    journal: JournalState
    # The module is stopping: it still answers calls under way, but balancers should send no new ones.
    draining: bool = False


class LambdaService:
    """Invokes Lambda through one boto3 client on a bounded executor, and records every invocation."""

    def __init__(
        self,
        settings: Settings,
        lambda_client: Any,
        invocation_log: InvocationLog,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        control_plane_timeout: float = CONTROL_PLANE_TIMEOUT_SECONDS,
        metrics: Metrics | None = None,
    ) -> None:
        self._settings = settings
        self.metrics = metrics or Metrics()
        self._client = lambda_client
        self._log = invocation_log
        self._sleep = sleep
        self._control_plane_timeout = control_plane_timeout
        self._retry = RetryPolicy(max_retries=settings.max_retries, base_delay=settings.retry_delay)
        self._prefix = settings.lambda_function_prefix
        self._max_in_flight = settings.max_concurrent_requests
        # One thread per invocation the cap allows (the default executor's min(32, CPUs + 4) threads would queue
        # invocations long before the cap is reached), and a few for list and configuration calls.
        self._workers = Workers(settings.max_concurrent_requests, "lambda")
        self._executor = ThreadPoolExecutor(max_workers=CONTROL_PLANE_THREADS, thread_name_prefix="lambda-control")
        self._in_flight = 0
        self._running: set[asyncio.Task] = set()
        # botocore clients take hooks; a stand-in without them simply passes no trace on.
        events = getattr(getattr(lambda_client, "meta", None), "events", None)
        if events is not None:
            events.register("before-sign.lambda.Invoke", _add_trace_header)
        # The AWS account function ARNs must name, once known (see _own_account).
        self._account: str | None = None
        # Callers waiting for an invocation's answer, each with its invocation's id.
        self._waiting: dict[asyncio.Future[None], str] = {}
        self._draining = False

    @property
    def in_flight(self) -> int:
        """Invocations under way right now."""
        return self._in_flight

    @property
    def endpoint_url(self) -> str:
        """Where the boto3 client sends its calls."""
        return str(self._client.meta.endpoint_url)

    async def invoke(
        self, request: InvokeRequest, caller: Caller, transport: Transport, *, deadline: float | None = None
    ) -> InvokeResult:
        """Invoke one function; a function's own error is a result (success False), not a ServiceError.

        `deadline` is the caller's, as a `time.monotonic()` instant: no attempt is sent to Lambda after it.
        """
        # Malformed requests are refused unrecorded; refusals of well-formed ones (not allowed, over the cap)
        # are recorded, so the history shows every invocation someone asked for and why it did not run.
        function_name_of(request.function_name)  # InvalidRequest for a malformed name, before anything else
        self._validate(request)
        keyed: tuple[str, str] | None = None
        if request.idempotency_key is not None:
            check_idempotency_key(request.idempotency_key)
            keyed = (request.idempotency_key, _fingerprint_of(request))
        return await self._invoke_valid(request, caller, transport, deadline, keyed)

    async def _invoke_valid(
        self,
        request: InvokeRequest,
        caller: Caller,
        transport: Transport,
        deadline: float | None,
        keyed: tuple[str, str] | None,
    ) -> InvokeResult:
        """`invoke` once the request is known well-formed; `keyed` is its idempotency key and fingerprint."""
        # Refused unrecorded when the journal is full: no invocation runs without its record.
        try:
            self._log.check_room()
        except JournalFull as error:
            self.metrics.refused.labels(error.code).inc()
            raise
        record = _start_record(request, caller, transport, keyed[0] if keyed else None)
        try:
            self._check_access(caller, request.function_name)
            await self._check_owner(request.function_name)
            if self._in_flight >= self._max_in_flight:
                raise ConcurrencyLimitReached(
                    f"this module has {self._max_in_flight} invocations in flight (MAX_CONCURRENT_REQUESTS); "
                    "retry shortly",
                    retry_after=1.0,
                )
        except ServiceError as error:
            # A Forbidden refusal already has its DENIED audit line; one line per denied request is enough.
            await self._record_failure(record, error, 0.0, started=False, audited=isinstance(error, Forbidden))
            raise
        self._in_flight += 1
        self.metrics.in_flight.inc()
        claim: KeyClaim | None = None
        if keyed is not None:
            claim = KeyClaim(caller.label, keyed[0], keyed[1], record.invocation_id)
            try:
                earlier = await self._log.claim_key(claim, self._settings.idempotency_window_seconds)
            except BaseException:
                self._in_flight -= 1
                self.metrics.in_flight.dec()
                raise
            if earlier is not None:
                self._in_flight -= 1
                self.metrics.in_flight.dec()
                try:
                    return self._answer_of_earlier(earlier, claim, record)
                except ServiceError as error:
                    self.metrics.refused.labels(error.code).inc()
                    raise
        # The invocation runs as its own task: if the caller goes away, Lambda's answer is still recorded.
        task = asyncio.ensure_future(self._run_invocation(request, record, deadline, claim))
        self._running.add(task)
        task.add_done_callback(self._invocation_done)
        return await self._answer_of(task, record.invocation_id)

    def _answer_of_earlier(self, earlier: EarlierInvocation, claim: KeyClaim, record: InvocationStart) -> InvokeResult:
        """What a repeated keyed request is answered: the earlier invocation's outcome, or why it cannot be yet."""
        window = self._settings.idempotency_window_seconds
        if earlier.fingerprint != claim.fingerprint:
            raise IdempotencyKeyReused(
                f"the Idempotency-Key {claim.key!r} was given in the last {window} s (IDEMPOTENCY_WINDOW_SECONDS) to a "
                f"different request (invocation {earlier.invocation_id}): send a new key with a new request"
            )
        if earlier.record is None or not earlier.ended:
            raise InvocationInProgress(
                f"a request with this Idempotency-Key started invocation {earlier.invocation_id}, which has not "
                "ended yet (or its record is on its way): repeat the request shortly to get its outcome",
                earlier.invocation_id,
            )
        error_code = earlier.record.get("error_code")
        if error_code is not None:
            raise OutcomeUnknown(
                f"a request with this Idempotency-Key started invocation {earlier.invocation_id}, whose outcome is "
                f"unknown ({error_code}): the function may have run, so it is not run again for this key",
                earlier.invocation_id,
            )
        audit.invocation(record.caller, record.transport, record.function_name, record.invocation_type, "replayed", 0.0)
        return _replayed_result(earlier.record)

    async def _answer_of(self, task: asyncio.Task[InvokeResult], invocation_id: str) -> InvokeResult:
        """The invocation's result, as `asyncio.shield(task)` would give it, unless `release_waiting` is called
        first: then OutcomeUnknown, while the invocation runs on and is recorded."""
        answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def ended(_: asyncio.Task[InvokeResult]) -> None:
            if not answer.done():
                answer.set_result(None)

        task.add_done_callback(ended)
        self._waiting[answer] = invocation_id
        try:
            await answer
        finally:
            self._waiting.pop(answer, None)
            task.remove_done_callback(ended)
        return task.result()

    def begin_draining(self) -> None:
        """The module is stopping: health says so from now on (calls are still answered)."""
        self._draining = True

    def release_waiting(self) -> int:
        """Answer every caller still waiting for an invocation with OutcomeUnknown (the module is stopping and
        cannot wait longer); the invocations run on and are recorded. How many callers were released."""
        released = 0
        for answer, invocation_id in list(self._waiting.items()):
            if not answer.done():
                answer.set_exception(
                    OutcomeUnknown(
                        "the module is stopping and could not wait for this invocation to end: the function may "
                        f"still be running; do not run it again blindly; the record of invocation {invocation_id} "
                        "will say how it ended",
                        invocation_id,
                    )
                )
                released += 1
        if released:
            logger.warning("stopping: %d callers answered OutcomeUnknown, their invocations still running", released)
        return released

    async def invoke_async(
        self,
        function_name: str,
        payload: bytes,
        caller: Caller,
        transport: Transport,
        *,
        payload_is_json: bool = False,
        deadline: float | None = None,
        idempotency_key: str | None = None,
    ) -> InvokeResult:
        """Queue an Event invocation; the result carries Lambda's request id and status 202."""
        request = InvokeRequest(
            function_name=function_name,
            payload=payload,
            invocation_type="Event",
            payload_is_json=payload_is_json,
            idempotency_key=idempotency_key,
        )
        return await self.invoke(request, caller, transport, deadline=deadline)

    async def batch_invoke(
        self,
        requests: Sequence[InvokeRequest | ServiceError],
        caller: Caller,
        transport: Transport,
        *,
        deadline: float | None = None,
        idempotency_key: str | None = None,
    ) -> list[InvokeResult | ServiceError]:
        """Invoke each request, at most MAX_BATCH_CONCURRENCY at once; results in request order.

        An item may already be the error that keeps it from running (a transport could not parse it):
        it is answered as that error, in its place. With an `idempotency_key`, each item is keyed by it, '#' and
        its index, and the whole batch is the request the key stands for.
        """
        if not requests:
            raise InvalidRequest("invocations must hold at least one invocation")
        if len(requests) > self._settings.max_batch_size:
            raise InvalidRequest(
                f"a batch holds at most {self._settings.max_batch_size} invocations (MAX_BATCH_SIZE); "
                f"this one has {len(requests)}: split it"
            )
        batch_print = await self._check_batch_key(requests, caller, idempotency_key)
        bound = asyncio.Semaphore(self._settings.max_batch_concurrency)

        async def one(index: int, request: InvokeRequest | ServiceError) -> InvokeResult | ServiceError:
            if isinstance(request, ServiceError):
                return request
            async with bound:
                try:
                    if idempotency_key is None or batch_print is None:
                        return await self.invoke(request, caller, transport, deadline=deadline)
                    function_name_of(request.function_name)
                    self._validate(request)
                    keyed = (f"{idempotency_key}#{index}", batch_print)
                    return await self._invoke_valid(request, caller, transport, deadline, keyed)
                except ServiceError as error:
                    return error
                except Exception:
                    # One item's surprise must not lose the answers of the others (and invite a retry of all).
                    logger.exception("batch item for %s failed unexpectedly", request.function_name)
                    return InternalError()

        return list(await asyncio.gather(*(one(index, request) for index, request in enumerate(requests))))

    async def _check_batch_key(
        self, requests: Sequence[InvokeRequest | ServiceError], caller: Caller, idempotency_key: str | None
    ) -> str | None:
        """The batch's fingerprint when it is keyed; IdempotencyKeyReused when the key went to another batch."""
        if idempotency_key is None:
            return None
        check_idempotency_key(idempotency_key)
        batch_print = fingerprint(
            *(
                _fingerprint_of(request) if isinstance(request, InvokeRequest) else f"{request.code}:{request.message}"
                for request in requests
            )
        )
        # Every item's claim holds the batch's fingerprint: the first item's tells whether this is the same batch,
        # before any item runs.
        earlier = await self._log.peek_key(
            caller.label, f"{idempotency_key}#0", self._settings.idempotency_window_seconds
        )
        if earlier is not None and earlier.fingerprint != batch_print:
            raise IdempotencyKeyReused(
                f"the Idempotency-Key {idempotency_key!r} was given in the last "
                f"{self._settings.idempotency_window_seconds} s (IDEMPOTENCY_WINDOW_SECONDS) to a different batch: "
                "send a new key with a new request"
            )
        return batch_print

    async def list_functions(
        self, caller: Caller, max_items: int = MAX_LIST_PAGE, marker: str | None = None
    ) -> FunctionPage:
        """One page of the functions this caller may reach, and the marker for the next page."""
        check_page_size(max_items)
        functions: list[FunctionInfo] = []
        # Lambda cannot filter by name, so pages are read until this page is full; each Lambda page is taken
        # whole, which keeps its NextMarker a valid place to resume.
        for _ in range(_MAX_LIST_ROUNDS):
            arguments: dict[str, Any] = {"MaxItems": max_items - len(functions)}
            if marker:
                arguments["Marker"] = marker
            try:
                response = await self._read(functools.partial(self._client.list_functions, **arguments), "*")
            except InvalidRequest as error:
                if not marker or functions:
                    raise
                # The only parameter a caller gives Lambda here is the marker: Lambda did not know it.
                raise PageNotFound(
                    "no page of the listing starts at next_marker: give one a previous page returned, or none to "
                    "list from the start"
                ) from error
            functions.extend(
                _function_info(item)
                for item in response.get("Functions", [])
                if may_reach(caller, item.get("FunctionName", ""), self._prefix)
            )
            marker = response.get("NextMarker") or None
            if marker is None or len(functions) >= max_items:
                break
        return FunctionPage(functions=functions, next_marker=marker)

    async def get_function_config(
        self, caller: Caller, function_name: str, qualifier: str | None = None
    ) -> FunctionInfo:
        """The configuration of one function (of a version or alias when `qualifier` is given)."""
        self._check_access(caller, function_name)
        await self._check_owner(function_name)
        arguments: dict[str, Any] = {"FunctionName": function_name}
        if qualifier:
            check_qualifier(qualifier)
            arguments["Qualifier"] = qualifier
        response = await self._read(
            lambda: self._client.get_function_configuration(**arguments), function_name, qualifier
        )
        return _function_info(response)

    async def health(self) -> HealthReport:
        """Whether the invocation log's database answers, and which Lambda backend is in use."""
        return HealthReport(
            database_ok=await self._log.ping(),
            lambda_backend={
                "backend": self._settings.lambda_backend,
                "chosen_by": self._settings.lambda_backend_reason,
                "endpoint": self.endpoint_url,
                "region": self._settings.aws_region,
            },
            in_flight=self._in_flight,
            journal=self._log.state(),
            draining=self._draining,
        )

    async def close(self) -> None:
        """Wait for invocations under way to be recorded, then stop the executor."""
        if self._running:
            await asyncio.wait(set(self._running))
        self._workers.shutdown()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _check_access(self, caller: Caller, function_name: str) -> str:
        try:
            return check_access(caller, function_name, self._prefix)
        except Forbidden as error:
            audit.denied(caller.label, function_name, error.message)
            raise

    async def _check_owner(self, reference: str) -> None:
        """Forbidden when an ARN names another account, region or partition than the module's own."""
        named = owner_named_by(reference)
        if named is None:
            return
        own = await self._own_account()
        if own is None:
            raise Forbidden(
                "function_name is an ARN, but this module does not know its AWS account to check it against: set "
                "AWS_ACCOUNT_ID, or give the function's name"
            )
        region = self._settings.aws_region
        partition = partition_of(region)
        if named.account != own or named.region not in (None, region) or named.partition not in (None, partition):
            where = f"account {named.account}" + (f", region {named.region}" if named.region else "")
            raise Forbidden(
                f"function_name names a function of {where}; this module invokes only the functions of account "
                f"{own} in region {region} ({partition})"
            )

    async def _own_account(self) -> str | None:
        """The account ARNs must name: the embedded runtime's, AWS_ACCOUNT_ID, or STS's answer (asked once).

        None when it cannot be known: an endpoint other than AWS's is configured without AWS_ACCOUNT_ID, or STS
        did not answer (asked again next time).
        """
        if self._account is not None:
            return self._account
        if self._settings.lambda_backend == "local":
            self._account = LOCAL_RUNTIME_ACCOUNT
        elif self._settings.aws_account_id:
            self._account = self._settings.aws_account_id
        elif ".amazonaws.com" in self.endpoint_url:
            try:
                self._account = await self._read(lambda: caller_account(self._settings), "*")
            except ServiceError as error:
                logger.warning("could not learn this module's AWS account from STS: %s", error.message)
        return self._account

    def _validate(self, request: InvokeRequest) -> None:
        invocation_type_of(request.invocation_type)
        if request.alias and request.version:
            raise InvalidRequest("give alias or version, not both: each selects what Lambda runs")
        if request.alias:
            check_alias(request.alias)
        if request.version:
            check_version(request.version)
        limit = MAX_ASYNC_PAYLOAD_BYTES if request.invocation_type == "Event" else MAX_SYNC_PAYLOAD_BYTES
        if len(request.payload) > limit:
            raise PayloadTooLarge(
                f"payload is {len(request.payload)} bytes; Lambda takes at most {limit} bytes "
                f"for {request.invocation_type} invocations"
            )
        if not request.payload_is_json:
            parse_json(request.payload, "payload")
        if request.client_context and len(request.client_context) > MAX_CLIENT_CONTEXT_BYTES:
            raise InvalidRequest(f"client_context is larger than Lambda's {MAX_CLIENT_CONTEXT_BYTES} bytes (base64)")

    def _invocation_done(self, task: asyncio.Task) -> None:
        self._in_flight -= 1
        self.metrics.in_flight.dec()
        self._running.discard(task)
        if not task.cancelled():
            # Retrieve the error so that an invocation whose caller left does not warn about it.
            task.exception()

    async def _run_invocation(
        self, request: InvokeRequest, record: InvocationStart, deadline: float | None, claim: KeyClaim | None
    ) -> InvokeResult:
        started = time.perf_counter()
        arguments = _invoke_arguments(request)
        mode = RetryMode.INVOKE_EVENT if request.invocation_type == "Event" else RetryMode.INVOKE_SYNC
        journaled = _Journaled()
        trace = current_trace()
        trace_header = trace.amzn_trace_id if trace is not None else None
        try:
            invoke_and_record = functools.partial(
                self._invoke_and_record, arguments, record, started, journaled, trace_header
            )
            result, outcome = await self._call(
                functools.partial(self._attempt_invocation, invoke_and_record, journaled),
                mode,
                record.function_name,
                request.qualifier,
                deadline,
            )
        except Exception as error:
            duration_ms = (time.perf_counter() - started) * 1000
            if journaled.start_failed:
                if claim is not None:
                    await self._log.release_key(claim)
                raise  # refused: the journal cannot take it, and no invocation runs unrecorded
            failure = error
            if request.invocation_type != "DryRun" and journaled.started and may_have_run(error.__cause__ or error):
                failure = _outcome_unknown(error, record.invocation_id)
            # Ended before its first attempt (the caller's deadline), or during one: recorded either way.
            await self._record_failure(record, failure, duration_ms, started=journaled.started)
            if claim is not None and not isinstance(failure, OutcomeUnknown):
                # The function did not run: a repeat of the request with this key may run it.
                await self._log.release_key(claim)
            if not isinstance(error, ServiceError):
                logger.exception("invocation %s failed unexpectedly", record.invocation_id)
            if failure is not error:
                raise failure from error
            raise
        if journaled.outcome_error is not None:
            logger.error(
                "the journal did not take the outcome of %s (%s); writing it directly",
                record.invocation_id,
                journaled.outcome_error,
            )
            await self._log.record_directly(record, outcome)
        status = "success" if result.success else f"function_error:{result.function_error}"
        self.metrics.invocation_ended(
            record.function_name,
            record.invocation_type,
            record.transport,
            "success" if result.success else "function_error",
            result.duration_ms / 1000,
        )
        audit.invocation(
            record.caller, record.transport, record.function_name, record.invocation_type, status, result.duration_ms
        )
        return result

    def _attempt_invocation(
        self, invoke_and_record: Callable[[], tuple[InvokeResult, InvocationOutcome]], journaled: _Journaled
    ) -> asyncio.Future[tuple[InvokeResult, InvocationOutcome]]:
        """One attempt (`_invoke_and_record`) on a worker thread, answered once its outcome is durable.

        The thread calls Lambda and hands over the outcome; the fdatasync that writes it and makes it durable settles
        this attempt together with every other outcome of the same fdatasync, in one wake of the loop: one hand-off
        each way per invocation.
        """
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[tuple[InvokeResult, InvocationOutcome]] = loop.create_future()

        def attempt() -> None:
            try:
                value = invoke_and_record()
            except BaseException as error:
                _call_soon(loop, _fail, answer, error)
                return
            if journaled.outcome_error is not None:
                _call_soon(loop, _answer_with, answer, value, journaled, None)
                return
            self._log.when_outcome_durable(
                journaled.outcome_position, loop, functools.partial(_answer_with, answer, value, journaled)
            )

        self._workers.submit(attempt)
        return answer

    def _invoke_and_record(
        self,
        arguments: dict[str, Any],
        record: InvocationStart,
        started: float,
        journaled: _Journaled,
        trace_header: str | None = None,
    ) -> tuple[InvokeResult, InvocationOutcome]:
        """One attempt, on an executor thread: journal the start (first attempt only), call Lambda, journal the outcome.

        The journal's I/O happens here, beside the call, so an invocation takes one hand-off from the event loop.
        """
        if not journaled.started:
            try:
                self._log.record_start(record)
            except OSError as error:
                journaled.start_failed = True
                logger.error("the invocation journal cannot be written: %s", error)
                raise DatabaseUnavailable(
                    "the invocation could not be recorded (the module's journal cannot be written); retry later"
                ) from None
            journaled.started = True
        response, payload = self._invoke_blocking(arguments, trace_header)
        duration_ms = (time.perf_counter() - started) * 1000
        result = _invoke_result(record, response, payload, duration_ms)
        outcome = InvocationOutcome(
            success=result.success,
            completed_at=utc_now(),
            duration_ms=duration_ms,
            status_code=result.status_code,
            response_payload=result.payload,
            function_error=result.function_error,
            executed_version=result.executed_version,
            request_id=result.request_id,
            error_message=_function_error_message(result),
            log_tail=result.log_result,
        )
        try:
            # Made durable by the journal's group fsync, which the loop waits for (see Journal.when_durable).
            journaled.outcome_position = self._log.write_outcome(record, outcome)
        except Exception as error:
            # The answer stands: the loop writes the record to the database directly instead.
            journaled.outcome_error = error
        return result, outcome

    async def _record_failure(
        self,
        record: InvocationStart,
        error: Exception,
        duration_ms: float,
        *,
        started: bool = True,
        audited: bool = False,
    ) -> None:
        """Complete the record of an invocation that failed (write it whole if it was refused before it `started`)."""
        known = error if isinstance(error, ServiceError) else InternalError()
        code = known.code
        outcome = InvocationOutcome(
            success=False,
            completed_at=utc_now(),
            duration_ms=duration_ms,
            error_message=known.message,
            error_code=code,
        )
        if started:
            await self._log.record_outcome(record, outcome)
        else:
            await self._log.record_whole(record, outcome)
        self.metrics.invocation_ended(record.function_name, record.invocation_type, record.transport, code, None)
        if isinstance(known, REFUSALS):
            self.metrics.refused.labels(code).inc()
        if not audited:
            audit.invocation(
                record.caller, record.transport, record.function_name, record.invocation_type, code, duration_ms
            )

    def _invoke_blocking(
        self, arguments: dict[str, Any], trace_header: str | None = None
    ) -> tuple[dict[str, Any], bytes]:
        # boto3's invoke takes no header: the trace rides on this thread to the hook that adds it to the request.
        _outgoing.trace_header = trace_header
        try:
            response = self._client.invoke(**arguments)
        finally:
            _outgoing.trace_header = None
        body = response.get("Payload")
        return response, body.read() if body is not None else b""

    async def _read(self, work: Callable[[], T], function_name: str, qualifier: str | None = None) -> T:
        """A control-plane call, retried as a read, within CONTROL_PLANE_TIMEOUT_SECONDS."""
        try:
            return await asyncio.wait_for(
                self._call(self._on_executor(work), RetryMode.READ, function_name, qualifier),
                self._control_plane_timeout,
            )
        except TimeoutError:
            raise UpstreamTimeout(
                f"Lambda did not answer within {self._control_plane_timeout:g} s; retry shortly"
            ) from None

    def _on_executor(self, work: Callable[[], T]) -> Callable[[], Awaitable[T]]:
        return lambda: asyncio.get_running_loop().run_in_executor(self._executor, work)

    async def _call(
        self,
        attempt: Callable[[], Awaitable[T]],
        mode: RetryMode,
        function_name: str,
        qualifier: str | None = None,
        deadline: float | None = None,
    ) -> T:
        """`attempt()` until it succeeds or the retry policy gives up: each attempt one call to Lambda."""
        tries = 0
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                raise DeadlineExceeded(
                    f"the caller's deadline passed before {function_name} was invoked"
                    + (f" (after {tries} attempts)" if tries else "")
                    + ": give the call more time"
                )
            try:
                return await attempt()
            except Exception as error:
                delay = self._retry.delay_before_retry(error, tries, mode)
                # A retry that could only start after the caller's deadline is not worth waiting for.
                if delay is None or (deadline is not None and time.monotonic() + delay >= deadline):
                    raise translate_error(error, function_name, qualifier) from error
                tries += 1
                self.metrics.retries.labels(type(error).__name__).inc()
                logger.info(
                    "retrying %s in %.2fs after %s (retry %d of %d)",
                    function_name,
                    delay,
                    type(error).__name__,
                    tries,
                    self._retry.max_retries,
                )
                await self._sleep(delay)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *arguments: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits for the answer any more
        loop.call_soon_threadsafe(callback, *arguments)


def _fail(answer: asyncio.Future[Any], error: BaseException) -> None:
    if not answer.done():
        answer.set_exception(error)


def _answer_with(answer: asyncio.Future[T], value: T, journaled: _Journaled, durability_error: OSError | None) -> None:
    """On the loop: the attempt's answer, once its outcome is durable; if it could not be made so, the answer stands
    and the loop writes the record to the database directly."""
    if durability_error is not None:
        journaled.outcome_error = durability_error
    if not answer.done():
        answer.set_result(value)


# The X-Amzn-Trace-Id of the invoke this thread is sending, if its caller sent a traceparent.
_outgoing = threading.local()


def _add_trace_header(request: Any, **_: Any) -> None:
    """botocore hook: pass the caller's trace on to Lambda, which reads X-Ray's header."""
    header = getattr(_outgoing, "trace_header", None)
    if header:
        request.headers["X-Amzn-Trace-Id"] = header


def _outcome_unknown(error: Exception, invocation_id: str) -> OutcomeUnknown:
    cause = error.message if isinstance(error, ServiceError) else "calling Lambda failed"
    return OutcomeUnknown(
        f"{cause}; the function may have run all the same: do not run it again blindly; the record of invocation "
        f"{invocation_id} will say how it ended",
        invocation_id,
    )


@dataclass
class _Journaled:
    """What an invocation's executor thread got into the journal (shared across its attempts)."""

    started: bool = False
    start_failed: bool = False
    outcome_error: Exception | None = None
    # Where the outcome ends in the journal: the answer waits until the journal is durable that far.
    outcome_position: int = 0


def _fingerprint_of(request: InvokeRequest) -> str:
    """What makes two keyed requests the same request (the payload's bytes as the transport passed them on)."""
    return fingerprint(
        request.function_name,
        request.invocation_type,
        request.alias,
        request.version,
        request.client_context,
        request.payload,
    )


def _replayed_result(record: dict[str, Any]) -> InvokeResult:
    """An earlier invocation's recorded outcome, as the answer to a repeat of its request."""
    return InvokeResult(
        invocation_id=record["invocation_id"],
        function_name=record["function_name"],
        invocation_type=record["invocation_type"],
        status_code=int(record.get("status_code") or 0),
        payload=record.get("response_payload") or "",
        function_error=record.get("function_error") or None,
        log_result=record.get("log_tail") or None,
        executed_version=record.get("executed_version") or None,
        request_id=record.get("request_id") or None,
        duration_ms=float(record.get("duration_ms") or 0.0),
        replayed=True,
    )


def _start_record(
    request: InvokeRequest, caller: Caller, transport: Transport, idempotency_key: str | None
) -> InvocationStart:
    return InvocationStart(
        invocation_id=new_id(),
        # As the caller gave it: an ARN stays an ARN in the record, which says what was asked for.
        function_name=request.function_name,
        invocation_type=request.invocation_type,
        payload=request.payload.decode("utf-8", errors="replace"),
        alias=request.alias,
        version=request.version,
        caller=caller.label,
        transport=transport,
        invoked_at=utc_now(),
        idempotency_key=idempotency_key,
        x_request_id=current_request_id(),
    )


def _invoke_arguments(request: InvokeRequest) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "FunctionName": request.function_name,
        "InvocationType": request.invocation_type,
        "Payload": request.payload,
    }
    if request.invocation_type == "RequestResponse":
        arguments["LogType"] = "Tail"
    if request.qualifier:
        arguments["Qualifier"] = request.qualifier
    if request.client_context:
        arguments["ClientContext"] = request.client_context
    return arguments


def _invoke_result(
    record: InvocationStart, response: dict[str, Any], payload: bytes, duration_ms: float
) -> InvokeResult:
    log_result = response.get("LogResult")
    return InvokeResult(
        invocation_id=record.invocation_id,
        function_name=record.function_name,
        invocation_type=record.invocation_type,
        status_code=int(response.get("StatusCode", 0)),
        payload=payload.decode("utf-8", errors="replace"),
        function_error=response.get("FunctionError") or None,
        log_result=base64.b64decode(log_result).decode("utf-8", errors="replace") if log_result else None,
        executed_version=response.get("ExecutedVersion") or None,
        request_id=response.get("ResponseMetadata", {}).get("RequestId") or None,
        duration_ms=duration_ms,
    )


def _function_error_message(result: InvokeResult) -> str | None:
    if result.function_error is None:
        return None
    value = result.payload_value
    message = value.get("errorMessage") if isinstance(value, dict) else None
    return str(message) if message is not None else result.function_error


def _function_info(data: dict[str, Any]) -> FunctionInfo:
    return FunctionInfo(
        function_name=data.get("FunctionName", ""),
        function_arn=data.get("FunctionArn", ""),
        runtime=data.get("Runtime", "") or "",
        role=data.get("Role", ""),
        handler=data.get("Handler", "") or "",
        code_size=int(data.get("CodeSize", 0) or 0),
        description=data.get("Description", "") or "",
        timeout=int(data.get("Timeout", 0) or 0),
        memory_size=int(data.get("MemorySize", 0) or 0),
        last_modified=data.get("LastModified", "") or "",
        version=data.get("Version", "") or "",
        state=data.get("State", "") or "",
        architectures=tuple(data.get("Architectures", ()) or ()),
    )


def encode_client_context(context: dict[str, Any]) -> str:
    """Lambda's ClientContext: base64 of the JSON object."""
    return base64.b64encode(json.dumps(context, separators=(",", ":")).encode()).decode()
