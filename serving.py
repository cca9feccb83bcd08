"""Serving: REST and gRPC on one loop in one process, or WORKERS such processes on shared ports under a parent.

`app.py` builds what is served; this module runs it: ports, signals, the drain, the embedded runtime's
lifetime, and the workers' supervision.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig
from quart import Quart

from config import MODULE_NAME, MODULE_VERSION, PROJECT_ROOT, Settings
from grpc_api.server import GrpcServer
from local_lambda import kept_running
from services.journal import instance_lock
from services.metrics import MULTIPROCESS_DIR_VARIABLE, multiprocess_dir, prepare_multiprocess_dir

logger = logging.getLogger(__name__)

T = TypeVar("T")

# A worker that dies sooner than this after starting is not restarted: it would only die again (a bad port...).
WORKER_MIN_UPTIME_SECONDS = 5.0
WORKER_RESTART_DELAY_SECONDS = 1.0
# How long before the end of the grace period callers still waiting are answered OutcomeUnknown: time enough for
# the answers to leave before the servers cut what is left.
RELEASE_MARGIN_SECONDS = 1.0
# How long the parent waits, beyond the grace period, before it kills a worker that does not stop.
WORKER_STOP_MARGIN_SECONDS = 10.0


@dataclass
class Servers:
    """What one process serves: the REST app, the gRPC server, and how to release what they use."""

    rest_app: Quart
    grpc_server: GrpcServer
    close: Callable[[], Awaitable[None]]
    lambda_endpoint: str
    # Answers the callers still waiting for an invocation with OutcomeUnknown (see _release_before_the_cut).
    release_waiting: Callable[[], int]
    # Makes /health answer 503 "draining" (gRPC health is the gRPC server's own).
    begin_draining: Callable[[], None] = lambda: None


# Builds the servers of one process inside its running loop; `prepare_clients` is False in a worker.
BuildServers = Callable[[Settings, bool], Awaitable[Servers]]
# The one-time start-up work a WORKERS parent does for all its workers (tables, clients).
PrepareOnce = Callable[[Settings], Awaitable[None]]


def run_on_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)`, on uvloop's event loop where it is installed (Linux and macOS): the loop runs every
    gRPC and HTTP callback of every call, and uvloop's costs less per callback than asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def check_ports_free(settings: Settings) -> None:
    """Stop before anything is started or written when a port this module needs is taken (another instance?)."""
    wanted = [("REST_PORT", settings.host, settings.rest_port), ("GRPC_PORT", settings.host, settings.grpc_port)]
    if settings.lambda_backend == "local":
        wanted.append(("LOCAL_LAMBDA_PORT", "127.0.0.1", settings.local_lambda_port))
    for variable, host, port in wanted:
        if port == 0:
            continue
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            # As the servers themselves bind: a connection of an earlier run in TIME_WAIT is no obstacle,
            # but a listener is, even one that shares its port (SO_REUSEPORT) with its own workers.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as error:
                raise OSError(
                    f"{variable}={port} cannot be used on {host}: {error.strerror}; "
                    "is another instance running? Stop it or choose another port"
                ) from None


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT: the one way this process is asked to stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


def stop_when_parent_ends(parent_fd: int, stop: asyncio.Event) -> None:
    """Set `stop` when the pipe from the parent closes: the parent ended, however abruptly (even SIGKILL)."""
    loop = asyncio.get_running_loop()

    def parent_gone() -> None:
        loop.remove_reader(parent_fd)
        if not stop.is_set():
            logger.error("the parent process is gone; stopping")
            stop.set()

    os.set_blocking(parent_fd, False)
    loop.add_reader(parent_fd, parent_gone)


def rest_config(settings: Settings) -> HypercornConfig:
    """How hypercorn serves the REST API, on a socket bound here (shared with other workers when WORKERS > 1)."""
    config = HypercornConfig()
    config.bind = [f"fd://{_rest_socket(settings).detach()}"]
    config.graceful_timeout = settings.shutdown_grace_seconds
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.include_server_header = False
    return config


def _rest_socket(settings: Settings) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if settings.workers > 1:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((settings.host, settings.rest_port))
    except OSError as error:
        sock.close()
        raise OSError(f"cannot listen for REST on {settings.host}:{settings.rest_port}: {error.strerror}") from None
    return sock


@contextlib.asynccontextmanager
async def embedded_runtime(settings: Settings) -> AsyncIterator[Settings]:
    """With LAMBDA_BACKEND=local, the embedded Lambda runtime for the block; yields settings with its port.

    Started once per host, by the process that owns the others (the only process, or the WORKERS parent).
    """
    if settings.lambda_backend != "local":
        yield settings
        return
    async with kept_running(
        settings.local_functions_dir,
        settings.local_lambda_port,
        settings.aws_region,
        settings.log_level,
        environment=dict(settings.local_lambda_environment),
    ) as port:
        yield replace(settings, local_lambda_port=port)


async def serve_process(settings: Settings, build: BuildServers, *, parent_fd: int | None = None) -> None:
    """Serve REST and gRPC on this loop until SIGTERM or SIGINT (or the parent's end), then drain and stop.

    A worker (`parent_fd` given) uses its parent's runtime and prepared clients; the only process starts both.
    """
    if parent_fd is not None:
        await _serve(settings, build, parent_fd)
        return
    with _spool_held(settings):
        async with embedded_runtime(settings) as serving_settings:
            await _serve(serving_settings, build, None)


async def _serve(settings: Settings, build: BuildServers, parent_fd: int | None) -> None:
    servers = await build(settings, parent_fd is None)
    stop = stop_on_signals()
    if parent_fd is not None:
        stop_when_parent_ends(parent_fd, stop)
    try:
        config = rest_config(settings)
        grpc_server = servers.grpc_server
        await grpc_server.start()
        logger.info("%d objects of start-up kept out of garbage collection", settle_start_up_objects())
        logger.info(
            "%s %s serving: REST on %s:%s, gRPC on port %s, Lambda backend %s (%s), database %s",
            MODULE_NAME,
            MODULE_VERSION,
            settings.host,
            settings.rest_port,
            grpc_server.port,
            settings.lambda_backend,
            servers.lambda_endpoint,
            settings.database_kind,
        )

        closing = asyncio.Event()

        async def lame_duck() -> None:
            await stop.wait()
            if settings.shutdown_delay_seconds > 0:
                # Health says NOT_SERVING while calls are still served: balancers stop sending before we refuse.
                servers.begin_draining()
                await grpc_server.health.enter_graceful_shutdown()
                logger.info("stopping: health says NOT_SERVING; serving on for %gs", settings.shutdown_delay_seconds)
                await asyncio.sleep(settings.shutdown_delay_seconds)
            closing.set()

        async def drain_grpc() -> None:
            await closing.wait()
            logger.info("stopping: no new calls; calls under way have %gs to finish", settings.shutdown_grace_seconds)
            await grpc_server.drain(settings.shutdown_grace_seconds)

        delayed = asyncio.ensure_future(lame_duck())
        grpc_drained = asyncio.ensure_future(drain_grpc())
        released = asyncio.ensure_future(_release_before_the_cut(closing, settings.shutdown_grace_seconds, servers))
        try:
            # Hypercorn stops listening when `closing` is set and waits up to its graceful timeout for requests.
            await hypercorn_serve(servers.rest_app, config, shutdown_trigger=closing.wait)
            await grpc_drained
        finally:
            delayed.cancel()
            grpc_drained.cancel()
            released.cancel()
            await grpc_server.stop()
    finally:
        await servers.close()
        logger.info("%s stopped", MODULE_NAME)


def settle_start_up_objects() -> int:
    """Leave what start-up built (modules, models, the app, the clients) out of every later garbage collection; how
    many objects that is.

    Start-up makes about 120,000 objects that live as long as the process; a full collection walked them all, and
    under load that was a pause of about 50 ms every few thousand calls.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


async def _release_before_the_cut(stop: asyncio.Event, grace_seconds: float, servers: Servers) -> None:
    """Just before the grace period ends, answer the callers still waiting with OutcomeUnknown.

    When it ends, both servers cut what is left: a REST caller would get an empty 500 and a gRPC caller
    UNAVAILABLE, which clients retry, running the function again. OutcomeUnknown (409, ABORTED) they do not retry.
    """
    await stop.wait()
    await asyncio.sleep(max(0.0, grace_seconds - min(RELEASE_MARGIN_SECONDS, grace_seconds / 2)))
    servers.release_waiting()


async def supervise_workers(settings: Settings, prepare: PrepareOnce) -> int:
    """WORKERS > 1: prepare once, run that many serving processes on shared ports, pass SIGTERM on; exit status."""
    with _spool_held(settings), _metrics_folder() as metrics_dir:
        async with embedded_runtime(settings) as serving_settings:
            await prepare(serving_settings)
            return await _WorkerGroup(serving_settings, metrics_dir).run()


@contextlib.contextmanager
def _metrics_folder() -> Iterator[Path]:
    """The folder the workers' metrics add up in (prometheus-client's multiprocess mode): PROMETHEUS_MULTIPROC_DIR
    when the operator set it, else a temporary one; emptied before the workers start, so no earlier run counts."""
    configured = multiprocess_dir()
    if configured is not None:
        prepare_multiprocess_dir(Path(configured))
        yield Path(configured)
        return
    with tempfile.TemporaryDirectory(prefix="lambda-action-metrics-") as folder:
        yield Path(folder)


@contextlib.contextmanager
def _spool_held(settings: Settings) -> Iterator[None]:
    """LOG_SPOOL_DIR held by this instance (its workers write under it): a second instance is refused."""
    fd = instance_lock(Path(settings.log_spool_dir))
    try:
        yield
    finally:
        os.close(fd)


class _WorkerGroup:
    """The WORKERS processes of one parent: each restarted when it dies, all stopped together."""

    def __init__(self, settings: Settings, metrics_dir: Path) -> None:
        self._settings = settings
        self._processes: dict[int, asyncio.subprocess.Process] = {}
        # The write end of each worker's parent pipe, held open for as long as the worker should live.
        self._parent_pipes: dict[int, int] = {}
        self._stop = asyncio.Event()
        self._failed = False
        self._environment = dict(os.environ)
        # Every worker must sign and check tokens with the same key, so a development key is made once, here.
        self._environment["MODULE_SECRET_KEY"] = settings.module_secret_key
        # The backend was chosen here, once; workers use it (and the one embedded runtime) as they are told.
        self._environment["LAMBDA_BACKEND"] = settings.lambda_backend
        self._environment["LOCAL_LAMBDA_PORT"] = str(settings.local_lambda_port)
        # Every worker writes its metrics there, and a scrape of any worker adds up all of them.
        self._environment[MULTIPROCESS_DIR_VARIABLE] = str(metrics_dir)

    async def run(self) -> int:
        self._stop = stop_on_signals()
        settings = self._settings
        logger.info(
            "starting %d workers on REST port %s and gRPC port %s",
            settings.workers,
            settings.rest_port,
            settings.grpc_port,
        )
        slots = [asyncio.ensure_future(self._keep_running(slot)) for slot in range(settings.workers)]
        await self._stop.wait()
        await self._stop_all()
        await asyncio.gather(*slots, return_exceptions=True)
        failed = self._failed or any(process.returncode not in (0, None) for process in self._processes.values())
        logger.info("%s stopped (%d workers)", MODULE_NAME, len(self._processes))
        return 1 if failed else 0

    async def _start(self, slot: int) -> asyncio.subprocess.Process:
        # The worker watches the read end of this pipe: when this process ends, even by SIGKILL, it closes.
        # (os.pipe's ends are not inherited; pass_fds hands the worker its own end only.)
        parent_read, parent_write = os.pipe()
        command = [
            sys.executable,
            str(Path(PROJECT_ROOT) / "app.py"),
            "serve",
            "--worker",
            "--parent-fd",
            str(parent_read),
            "--lambda-backend-reason",
            self._settings.lambda_backend_reason,
        ]
        try:
            process = await asyncio.create_subprocess_exec(*command, env=self._environment, pass_fds=(parent_read,))
        except BaseException:
            os.close(parent_write)
            raise
        finally:
            os.close(parent_read)
        self._parent_pipes[slot] = parent_write
        return process

    def _release_pipe(self, slot: int) -> None:
        fd = self._parent_pipes.pop(slot, None)
        if fd is not None:
            os.close(fd)

    async def _keep_running(self, slot: int) -> None:
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            started = loop.time()
            process = await self._start(slot)
            self._processes[slot] = process
            code = await process.wait()
            self._release_pipe(slot)
            if self._stop.is_set():
                return
            if loop.time() - started < WORKER_MIN_UPTIME_SECONDS:
                logger.error("worker %d exited with %s right after starting; stopping all workers", slot, code)
                self._failed = True
                self._stop.set()
                return
            logger.warning("worker %d (pid %d) exited with %s; starting another", slot, process.pid, code)
            # A pause, so that a worker dying over and over does not spin the parent.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), WORKER_RESTART_DELAY_SECONDS)

    async def _stop_all(self) -> None:
        for process in self._processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        deadline = self._settings.shutdown_grace_seconds + WORKER_STOP_MARGIN_SECONDS
        for process in self._processes.values():
            try:
                await asyncio.wait_for(process.wait(), deadline)
            except TimeoutError:
                logger.error("worker pid %d did not stop within %gs; killing it", process.pid, deadline)
                process.kill()
                await process.wait()
                self._failed = True
        for slot in list(self._parent_pipes):
            self._release_pipe(slot)
