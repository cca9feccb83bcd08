"""GrpcServer: the grpc.aio server with its health service, started, drained and stopped as one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

from grpc_api.interceptor import SERVICE_NAME, ServiceGuard
from services.invocation_log import JournalState

# How long the drain waits, once idle, for calls grpc accepted just before the stop to reach the guard.
_SETTLE_SECONDS = 0.2


class ModuleHealth(health_aio.HealthServicer):
    """gRPC health that also tells the record path's state: trailing metadata on every Check (journal depth and
    lag, whether the database takes records), and LambdaAction NOT_SERVING while the journal is full, because
    then this replica refuses every invocation."""

    def __init__(self, record_path: Callable[[], JournalState]) -> None:
        super().__init__()
        self._record_path = record_path

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        state = self._record_path()
        context.set_trailing_metadata(
            (
                ("journal-unshipped-bytes", str(state.unshipped_bytes)),
                ("journal-lag-seconds", f"{state.lag_seconds:g}"),
                ("journal-full", "true" if state.full else "false"),
                ("database-ok", "true" if state.database_ok else "false"),
            )
        )
        reply: health_pb2.HealthCheckResponse = await super().Check(request, context)
        if state.full and request.service == SERVICE_NAME and reply.status == health_pb2.HealthCheckResponse.SERVING:
            reply.status = health_pb2.HealthCheckResponse.NOT_SERVING
        return reply


@dataclass
class GrpcServer:
    """The grpc.aio server with its health service, bound to `port`."""

    server: grpc.aio.Server
    port: int
    health: health_aio.HealthServicer
    guard: ServiceGuard

    async def start(self) -> None:
        """Start answering, and report the LambdaAction service ready."""
        await self.server.start()
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)

    async def drain(self, grace_seconds: float) -> None:
        """Report NOT_SERVING, refuse new calls, and give calls under way `grace_seconds` to finish."""
        await self.health.enter_graceful_shutdown()
        stopping = asyncio.ensure_future(self.server.stop(grace_seconds))
        # Streams such as a health Watch never end by themselves and would hold the whole grace period:
        # once the last LambdaAction call is answered, nothing is left worth waiting for.
        await asyncio.sleep(0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled(), grace_seconds)
        await self.server.stop(None)
        await stopping

    async def _settled(self) -> None:
        """Return once no LambdaAction call is under way, nor has one begun for a little while: a call grpc took just
        before the stop reaches the guard a moment later, and cutting it then would answer UNAVAILABLE (which
        routers retry) to an invocation that runs on."""
        while True:
            await self.guard.wait_idle()
            await asyncio.sleep(_SETTLE_SECONDS)
            if self.guard.calls_in_flight == 0:
                return

    async def stop(self) -> None:
        """Stop at once, cancelling whatever is still under way."""
        await self.server.stop(None)
