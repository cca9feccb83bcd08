"""LocalLambdaRuntime: the embedded Lambda runtime as a server, the Lambda API on host:port around a LambdaRuntime.

    runtime = LocalLambdaRuntime(Path("functions"), port=0)
    await runtime.start()          # runtime.endpoint_url is then what boto3 takes as endpoint_url
    ...
    await runtime.stop()

or, from synchronous code, `with runtime.run_in_thread(): ...`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from local_lambda.api import LambdaApi
from local_lambda.http_server import HttpServer
from local_lambda.runtime import DEFAULT_CACHE_DIR, MAX_SYNC_PAYLOAD_BYTES, LambdaRuntime
from local_lambda.settings import RuntimeSettings

logger = logging.getLogger(__name__)


class LocalLambdaRuntime:
    """The Lambda API on host:port for the functions in `functions_dir`; `await start()`, `await stop()`."""

    def __init__(
        self,
        functions_dir: Path | str,
        host: str = "127.0.0.1",
        port: int = 9001,
        region: str = "us-east-1",
        settings: RuntimeSettings | None = None,
        cache_dir: Path | str = DEFAULT_CACHE_DIR,
    ) -> None:
        # Without settings, they are read from the environment (LOCAL_LAMBDA_MAX_CONCURRENCY...).
        self.runtime = LambdaRuntime(functions_dir, region, settings, cache_dir)
        self.functions_dir = self.runtime.functions_dir
        self.host = host
        self.port = port  # the bound port once started (port 0 picks a free one)
        self._server: HttpServer | None = None

    @property
    def endpoint_url(self) -> str:
        """The URL to give boto3 as endpoint_url."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        host = "[::1]" if host == "::" else f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def worker_pids(self, function_name: str) -> list[int]:
        """The process ids of a function's workers, idle or busy (for tests and diagnostics)."""
        return self.runtime.worker_pids(function_name)

    async def start(self) -> None:
        """Bind and serve; `port` and `endpoint_url` then give the real address."""
        # No operation takes a body over the synchronous payload limit: a longer one is not held in memory.
        server = HttpServer(LambdaApi(self.runtime).handle, max_body_bytes=MAX_SYNC_PAYLOAD_BYTES)
        self.port = await server.start(self.host, self.port)
        # Functions read it from AWS_LAMBDA_RUNTIME_API, as on Lambda.
        self.runtime.runtime_api = f"{self.host}:{self.port}"
        self._server = server
        await self.runtime.open()
        logger.info("local Lambda runtime serving %s at %s", self.functions_dir, self.endpoint_url)

    async def stop(self) -> None:
        """Stop serving (requests in progress are cancelled) and stop every worker."""
        if self._server is not None:
            await self._server.stop()
            self._server = None
        await self.runtime.close()

    async def __aenter__(self) -> LocalLambdaRuntime:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @contextlib.contextmanager
    def run_in_thread(self, timeout: float = 10.0) -> Iterator[LocalLambdaRuntime]:
        """Serve from a background thread with its own event loop, for synchronous callers and tests."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="local-lambda", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout)
            try:
                yield self
            finally:
                asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout)
        finally:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(loop.shutdown_default_executor(), loop).result(timeout)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            loop.close()
