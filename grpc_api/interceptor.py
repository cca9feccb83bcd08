"""Authentication and error mapping for every LambdaAction RPC, done once here rather than in each method."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc.aio import AbortError

from grpc_api.errors import error_metadata, grpc_status_for
from proto import lambda_action_pb2 as pb
from services.auth import Authenticator, bearer_token_of
from services.domain import Caller
from services.errors import InternalError, InvalidRequest, ServiceError
from services.tracing import REQUEST_ID_METADATA, TRACEPARENT, enter_trace, leave_trace, trace_of

logger = logging.getLogger(__name__)

SERVICE_NAME = "lambda_action.LambdaAction"

# The metadata key of an idempotency key (gRPC metadata keys are lower case), and the trailing metadata that says an
# answer replays an earlier invocation's outcome.
IDEMPOTENCY_KEY_METADATA = "idempotency-key"
REPLAYED_METADATA = "idempotent-replayed"

_current_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("grpc_caller")

Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def current_caller() -> Caller:
    """The caller the guard authenticated for this RPC."""
    return _current_caller.get()


def call_deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The client's deadline as a `time.monotonic()` instant, or None when it set none."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def idempotency_key(context: grpc.aio.ServicerContext) -> str | None:
    """The call's `idempotency-key` metadata, if it sent one."""
    return _metadata_value(context, IDEMPOTENCY_KEY_METADATA)


class ServiceGuard:
    """Turns the call's token into a Caller and domain errors into gRPC statuses, for LambdaAction only.

    The token may travel in the message (older routers put it in a `token` field), so the check runs
    around the method, once the request is parsed, rather than on metadata alone.
    """

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator
        self._calls_in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def calls_in_flight(self) -> int:
        """LambdaAction calls being answered right now."""
        return self._calls_in_flight

    async def wait_idle(self) -> None:
        """Return once no LambdaAction call is being answered."""
        await self._idle.wait()

    def _call_ended(self) -> None:
        self._calls_in_flight -= 1
        if self._calls_in_flight == 0:
            self._idle.set()

    def add_guarded_servicer(self, servicer: object, server: grpc.aio.Server) -> None:
        """Register every LambdaAction method of `servicer` on `server`, each wrapped by the guard once, here.

        A grpc interceptor would run a coroutine per call, for every service (health included), to find what a
        single lookup finds: wrapping the methods where they are registered costs nothing per call.
        """
        handlers: dict[str, grpc.RpcMethodHandler] = {}
        for method in pb.DESCRIPTOR.services_by_name[SERVICE_NAME.rsplit(".", 1)[-1]].methods:
            if method.client_streaming or method.server_streaming:
                raise TypeError(f"{method.full_name} streams; the guard wraps unary methods only")
            request_type = getattr(pb, method.input_type.name)
            response_type = getattr(pb, method.output_type.name)
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                self._guard(f"/{SERVICE_NAME}/{method.name}", getattr(servicer, method.name)),
                request_deserializer=_tolerant(request_type.FromString),
                response_serializer=response_type.SerializeToString,
            )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
        server.add_registered_method_handlers(SERVICE_NAME, handlers)

    def _guard(self, method: str, behavior: Behavior) -> Behavior:
        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            failure: ServiceError | None = None
            self._calls_in_flight += 1
            self._idle.clear()
            trace = trace_of(_metadata_value(context, REQUEST_ID_METADATA), _metadata_value(context, TRACEPARENT))
            traced = enter_trace(trace)
            try:
                if isinstance(request, _Undecodable):
                    raise InvalidRequest(
                        f"the request is not a valid {method.rsplit('/', 1)[-1]} message: its bytes do not decode as "
                        f"the protobuf message of lambda_action.proto ({request.problem})"
                    )
                caller = await self._authenticator.authenticate(_token(request, context), _peer(context))
                reset = _current_caller.set(caller)
                try:
                    reply = await behavior(request, context)
                finally:
                    _current_caller.reset(reset)
                # The servicer may have set trailing metadata of its own (idempotent-replayed): the id joins it.
                context.set_trailing_metadata(
                    (*(context.trailing_metadata() or ()), (REQUEST_ID_METADATA, trace.request_id))
                )
                logger.debug("%s OK %.1fms", method, (time.perf_counter() - started) * 1000)
                return reply
            except ServiceError as error:
                failure = error
            except AbortError:
                raise
            except Exception:
                logger.exception("unexpected error answering %s", method)
                failure = InternalError()
            finally:
                self._call_ended()
                leave_trace(traced)
            status = grpc_status_for(failure)
            logger.debug("%s %s %s %.1fms", method, status.name, failure.code, (time.perf_counter() - started) * 1000)
            await context.abort(
                status, failure.message, (*error_metadata(failure), (REQUEST_ID_METADATA, trace.request_id))
            )

        return guarded


class _Undecodable:
    """What the server got instead of a message whose bytes did not decode; the method answers INVALID_ARGUMENT."""

    def __init__(self, problem: str) -> None:
        self.problem = problem


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """The method's deserializer, but bytes that do not decode become an _Undecodable rather than grpc's UNKNOWN."""
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as error:
            return _Undecodable(str(error) or type(error).__name__)

    return deserialize


def _metadata_value(context: grpc.aio.ServicerContext, wanted: str) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == wanted:
            return value if isinstance(value, str) else None
    return None


def _token(request: Any, context: grpc.aio.ServicerContext) -> str | None:
    """The bearer token of the `authorization` metadata, else the message's `token` field."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            token = bearer_token_of(str(value))
            if token is not None:
                return token
    return getattr(request, "token", "") or None


def _peer(context: grpc.aio.ServicerContext) -> str:
    """The caller's address without its port, as audit lines show REST callers: "ipv4:10.0.0.7:50123" -> "10.0.0.7"."""
    peer = context.peer() or "-"
    kind, _, address = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer
    # grpc percent-encodes IPv6 brackets: "ipv6:%5B::1%5D:50123".
    host = urllib.parse.unquote(address).rsplit(":", 1)[0]
    return host.strip("[]")
