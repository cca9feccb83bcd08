"""The embedded runtime kept running: started once per host as a child process, restarted if it dies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from local_lambda.process import RuntimeProcess

logger = logging.getLogger(__name__)

# How long the runtime may take to listen (it imports no handler until the first call).
READY_SECONDS = 15.0
# How often the owning process checks the runtime is still there.
CHECK_SECONDS = 1.0


@contextlib.asynccontextmanager
async def kept_running(
    functions_dir: Path | str,
    port: int,
    region: str,
    log_level: str = "INFO",
    *,
    environment: Mapping[str, str] | None = None,
    ready_seconds: float = READY_SECONDS,
    check_seconds: float = CHECK_SECONDS,
) -> AsyncIterator[int]:
    """Run the runtime on 127.0.0.1:`port` (0 picks one) for the block; yields the port it listens on.

    If the runtime exits while the block runs, it is started again on the same port. OSError when it cannot
    start at all.
    """

    def start(on_port: int) -> RuntimeProcess:
        return RuntimeProcess.start(
            functions_dir, "127.0.0.1", on_port, region, ready_seconds, log_level, environment=environment
        )

    try:
        runtime = await asyncio.to_thread(start, port)
    except RuntimeError as error:
        raise OSError(
            f"the local Lambda runtime did not start on 127.0.0.1:{port} ({error}); is LOCAL_LAMBDA_PORT free?"
        ) from None
    bound_port = runtime.port

    async def restart_when_gone() -> None:
        nonlocal runtime
        while True:
            await asyncio.sleep(check_seconds)
            if runtime.running:
                continue
            code = await asyncio.to_thread(runtime.stop)
            logger.error("the local Lambda runtime (pid %d) exited with %s; starting it again", runtime.pid, code)
            try:
                runtime = await asyncio.to_thread(start, bound_port)
            except RuntimeError as error:
                logger.error("the local Lambda runtime could not be started again: %s; retrying", error)

    watcher = asyncio.ensure_future(restart_when_gone())
    try:
        yield bound_port
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await asyncio.to_thread(runtime.stop)
