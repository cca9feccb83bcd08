"""Wiring: the app factory, the gRPC server builder, the module's services, logging, serving, and the client tool."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import logging.handlers
import os
import signal
import socket
import sys
import warnings
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig
from quart import Quart

from config import (
    MODULE_NAME,
    MODULE_VERSION,
    PROJECT_ROOT,
    Settings,
    SettingsError,
    environment_with_dotenv,
    load_settings,
)
from grpc_api.interceptor import SERVICE_NAME, ServiceInterceptor
from grpc_api.servicer import LambdaActionServicer
from local_lambda import RuntimeProcess
from proto import lambda_action_pb2_grpc
from routes import functions, health, invoke, token
from routes.context import EXTENSION_KEY, AppServices
from routes.errors import register_error_handlers
from routes.openapi import install_openapi
from services.auth import Authenticator, hash_secret, new_secret
from services.clients import ClientStore, validate_patterns
from services.database import Database
from services.errors import ServiceError
from services.invocation_log import InvocationLog
from services.lambda_client import build_lambda_client, build_local_lambda_client, find_aws
from services.lambda_service import LambdaService

logger = logging.getLogger(__name__)

# Quart refuses larger bodies with 413: room for Lambda's 6 MB payload even when escaped inside a JSON string.
MAX_REQUEST_BYTES = 16 * 1024 * 1024
LOG_FILE_BYTES = 10 * 1024 * 1024
LOG_FILE_BACKUPS = 5
DEV_CLIENT_ID = "local-dev"
# A worker that dies sooner than this after starting is not restarted: it would only die again (a bad port...).
WORKER_MIN_UPTIME_SECONDS = 5.0
WORKER_RESTART_DELAY_SECONDS = 1.0
# How long the parent waits, beyond the grace period, before it kills a worker that does not stop.
WORKER_STOP_MARGIN_SECONDS = 10.0
# How long the embedded Lambda runtime may take to listen (it imports no handler until the first call).
LOCAL_RUNTIME_READY_SECONDS = 15.0
# How often the process that started the embedded runtime checks it is still there.
LOCAL_RUNTIME_CHECK_SECONDS = 1.0


def create_app(settings: Settings, service: LambdaService, authenticator: Authenticator) -> Quart:
    """The Quart app serving the REST API over the given services."""
    app = Quart(MODULE_NAME)
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    install_openapi(app)
    app.extensions[EXTENSION_KEY] = AppServices(settings=settings, service=service, authenticator=authenticator)
    for blueprint in (health.blueprint, token.blueprint, invoke.blueprint, functions.blueprint):
        app.register_blueprint(blueprint)
    register_error_handlers(app)
    return app


@dataclass
class GrpcServer:
    """The grpc.aio server with its health service, bound to `port`."""

    server: grpc.aio.Server
    port: int
    health: health_aio.HealthServicer
    interceptor: ServiceInterceptor

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
            await asyncio.wait_for(self.interceptor.wait_idle(), grace_seconds)
        await self.server.stop(None)
        await stopping


def build_grpc_server(
    settings: Settings, service: LambdaService, authenticator: Authenticator, *, reuse_port: bool = False
) -> GrpcServer:
    """The gRPC server on GRPC_PORT (0 picks a free one); build it inside the running loop, then `start()` it."""
    options = [
        ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
        ("grpc.max_send_message_length", settings.grpc_max_message_bytes),
        # grpc shares ports by default; one process per port unless WORKERS asks, so a clash fails loudly.
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]
    interceptor = ServiceInterceptor(authenticator)
    server = grpc.aio.server(interceptors=[interceptor], options=options)
    lambda_action_pb2_grpc.add_LambdaActionServicer_to_server(LambdaActionServicer(service), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    if settings.grpc_reflection:
        names = (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    try:
        port = server.add_insecure_port(f"{host}:{settings.grpc_port}")
    except RuntimeError as error:
        raise OSError(f"cannot listen for gRPC on {host}:{settings.grpc_port}: {error}") from None
    if port == 0:
        raise OSError(f"cannot listen for gRPC on {host}:{settings.grpc_port} (is the port in use?)")
    return GrpcServer(server=server, port=port, health=health, interceptor=interceptor)


@dataclass
class Module:
    """Everything one process serves with: built once, shared by every transport."""

    settings: Settings
    database: Database
    clients: ClientStore
    invocation_log: InvocationLog
    authenticator: Authenticator
    service: LambdaService

    async def close(self) -> None:
        """Let invocations under way finish and be recorded, then release threads and connections."""
        await self.service.close()
        await asyncio.to_thread(self.database.close)


async def build_module(settings: Settings, lambda_client: Any = None, *, prepare_clients: bool = True) -> Module:
    """Open the database, prepare clients, and build the services; `lambda_client` overrides boto3's.

    Workers started by a parent process skip `prepare_clients`: the parent did it once for all of them.
    """
    database = await asyncio.to_thread(Database, settings.database_url, settings.database_pool_size)
    clients = ClientStore(database)
    if prepare_clients:
        await _prepare_clients(settings, clients)
    client = lambda_client
    if client is None and settings.lambda_backend == "local":
        client = build_local_lambda_client(settings, local_runtime_url(settings))
    elif client is None:
        client = build_lambda_client(settings)
    invocation_log = InvocationLog(database)
    service = LambdaService(settings, client, invocation_log)
    return Module(
        settings=settings,
        database=database,
        clients=clients,
        invocation_log=invocation_log,
        authenticator=Authenticator(settings, clients),
        service=service,
    )


def choose_lambda_backend(settings: Settings, environ: Mapping[str, str]) -> Settings:
    """Settings with LAMBDA_BACKEND=auto made concrete: aws when AWS is configured here, else local."""
    if settings.lambda_backend == "aws" and find_aws(environ) is None:
        logger.warning(
            "LAMBDA_BACKEND=aws, but boto3 finds no AWS credentials and no endpoint is set: invocations will answer "
            "503 BackendNotConfigured until AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an IAM role or "
            "AWS_ENDPOINT_URL_LAMBDA is set"
        )
    if settings.lambda_backend != "auto":
        return settings
    found = find_aws(environ)
    if found is not None:
        return replace(settings, lambda_backend="aws", lambda_backend_reason=f"auto: {found}")
    logger.warning(
        "*** LAMBDA_BACKEND is not set and no AWS credentials or endpoint were found: functions run on the "
        "embedded local runtime from %s. Set LAMBDA_BACKEND=aws (and credentials) to call AWS Lambda. ***",
        settings.local_functions_dir,
    )
    return replace(settings, lambda_backend="local", lambda_backend_reason="auto: no AWS credentials or endpoint found")


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


def local_runtime_url(settings: Settings) -> str:
    """Where the embedded runtime answers: always loopback, never another host."""
    return f"http://127.0.0.1:{settings.local_lambda_port}"


async def _prepare_clients(settings: Settings, clients: ClientStore) -> None:
    if settings.bootstrap_client_id:
        created = await clients.save(settings.bootstrap_client_id, hash_secret(settings.bootstrap_client_secret))
        logger.info("bootstrap client %s %s", settings.bootstrap_client_id, "created" if created else "updated")
    if settings.secret_key_generated:
        secret = new_secret()
        await clients.save(DEV_CLIENT_ID, hash_secret(secret), description="development client, reset at each start")
        _announce_development_client(settings, secret)
    elif settings.bootstrap_client_id != DEV_CLIENT_ID:
        # A development run against this database left its client behind; with a real key it must not work.
        development = await clients.get(DEV_CLIENT_ID)
        if development is not None and development.active:
            await clients.set_active(DEV_CLIENT_ID, False)
            logger.warning("disabled the development client %s: MODULE_SECRET_KEY is configured", DEV_CLIENT_ID)


def _announce_development_client(settings: Settings, secret: str) -> None:
    # Printed, not logged: log files must never hold a secret.
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    body = f'{{"client_id": "{DEV_CLIENT_ID}", "client_secret": "{secret}"}}'
    print(
        "\n*** WARNING: MODULE_SECRET_KEY is not set: tokens are signed with a random key made for this run.\n"
        "*** Development only; set MODULE_SECRET_KEY (and ENVIRONMENT=production) for real use.\n"
        f"*** Development client: client_id={DEV_CLIENT_ID} client_secret={secret}\n"
        f"*** Get a token: curl -s -X POST http://{host}:{settings.rest_port}/api/v1/token "
        f"-H 'Content-Type: application/json' -d '{body}'\n",
        flush=True,
    )


def configure_logging(settings: Settings) -> None:
    """Console always; a rotating file under LOG_DIR when it can be written; syslog when enabled."""
    formatter = logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    file_problem = None
    try:
        log_dir = Path(settings.log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(
            logging.handlers.RotatingFileHandler(
                log_dir / "lambda_action.log", maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_BACKUPS
            )
        )
    except OSError as error:
        file_problem = error
    if settings.enable_syslog:
        facility = logging.handlers.SysLogHandler.facility_names[settings.syslog_facility]
        handlers.append(
            logging.handlers.SysLogHandler(address=(settings.syslog_host, settings.syslog_port), facility=facility)
        )
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(settings.log_level)
    # botocore and urllib3 at DEBUG print request bodies and headers; keep them quieter than the module.
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
    if file_problem is not None:
        logger.warning(
            "cannot write logs under LOG_DIR=%s (%s); logging to the console only", settings.log_dir, file_problem
        )


def hypercorn_config(settings: Settings) -> HypercornConfig:
    """How hypercorn serves the REST API."""
    config = HypercornConfig()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config.bind = [f"{host}:{settings.rest_port}"]
    config.graceful_timeout = settings.shutdown_grace_seconds
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.include_server_header = False
    # Hypercorn sets SO_REUSEPORT on its sockets when it is told of more than one worker; its warning that
    # `workers` means nothing to serve() is true (this module runs the processes) and only confuses readers.
    config.workers = settings.workers
    warnings.filterwarnings("ignore", message="The config `workers` has no affect", category=Warning)
    return config


@contextlib.asynccontextmanager
async def local_runtime(settings: Settings) -> AsyncIterator[Settings]:
    """With LAMBDA_BACKEND=local, the embedded Lambda runtime as a child process; yields settings with its port.

    Started once per host, by the process that owns the others (the only process, or the WORKERS parent).
    """
    if settings.lambda_backend != "local":
        yield settings
        return

    def start(port: int) -> RuntimeProcess:
        return RuntimeProcess.start(
            settings.local_functions_dir,
            "127.0.0.1",
            port,
            settings.aws_region,
            LOCAL_RUNTIME_READY_SECONDS,
            settings.log_level,
        )

    try:
        runtime = await asyncio.to_thread(start, settings.local_lambda_port)
    except RuntimeError as error:
        raise OSError(
            f"the local Lambda runtime did not start on 127.0.0.1:{settings.local_lambda_port} ({error}); "
            "is LOCAL_LAMBDA_PORT free?"
        ) from None
    port = runtime.port

    async def keep_running() -> None:
        nonlocal runtime
        while True:
            await asyncio.sleep(LOCAL_RUNTIME_CHECK_SECONDS)
            if runtime.running:
                continue
            code = await asyncio.to_thread(runtime.stop)
            logger.error("the local Lambda runtime (pid %d) exited with %s; starting it again", runtime.pid, code)
            try:
                runtime = await asyncio.to_thread(start, port)
            except RuntimeError as error:
                logger.error("the local Lambda runtime could not be started again: %s; retrying", error)

    watcher = asyncio.ensure_future(keep_running())
    try:
        yield replace(settings, local_lambda_port=port)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await asyncio.to_thread(runtime.stop)


async def serve(settings: Settings, *, worker: bool = False) -> None:
    """Serve REST and gRPC on this loop until SIGTERM or SIGINT, then let calls under way finish and stop."""
    if worker:
        await _serve(settings, worker=True)
        return
    async with local_runtime(settings) as serving_settings:
        await _serve(serving_settings, worker=False)


async def _serve(settings: Settings, *, worker: bool) -> None:
    module = await build_module(settings, prepare_clients=not worker)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        app = create_app(settings, module.service, module.authenticator)
        grpc_server = build_grpc_server(settings, module.service, module.authenticator, reuse_port=settings.workers > 1)
        await grpc_server.start()
        logger.info(
            "%s %s serving: REST on %s:%s, gRPC on port %s, Lambda backend %s (%s), database %s",
            MODULE_NAME,
            MODULE_VERSION,
            settings.host,
            settings.rest_port,
            grpc_server.port,
            settings.lambda_backend,
            module.service.endpoint_url,
            settings.database_kind,
        )

        async def drain_grpc() -> None:
            await stop.wait()
            logger.info("stopping: no new calls; calls under way have %gs to finish", settings.shutdown_grace_seconds)
            await grpc_server.drain(settings.shutdown_grace_seconds)

        grpc_drained = asyncio.ensure_future(drain_grpc())
        try:
            # Hypercorn stops listening when `stop` is set and waits up to its graceful timeout for requests.
            await hypercorn_serve(app, hypercorn_config(settings), shutdown_trigger=stop.wait)
            await grpc_drained
        finally:
            grpc_drained.cancel()
            await grpc_server.server.stop(None)
    finally:
        await module.close()
        logger.info("%s stopped", MODULE_NAME)


async def supervise(settings: Settings) -> int:
    """WORKERS > 1: prepare once, run that many serving processes on shared ports, and pass SIGTERM on."""
    async with local_runtime(settings) as serving_settings:
        return await _supervise(serving_settings)


async def _supervise(settings: Settings) -> int:
    database = await asyncio.to_thread(Database, settings.database_url, 1)
    try:
        await _prepare_clients(settings, ClientStore(database))
    finally:
        await asyncio.to_thread(database.close)
    environment = dict(os.environ)
    # Every worker must sign and check tokens with the same key, so a development key is made once, here.
    environment["MODULE_SECRET_KEY"] = settings.module_secret_key
    # The backend was chosen here, once; workers use it (and the one embedded runtime) as they are told.
    environment["LAMBDA_BACKEND"] = settings.lambda_backend
    environment["LOCAL_LAMBDA_PORT"] = str(settings.local_lambda_port)
    command = [sys.executable, str(PROJECT_ROOT / "app.py"), "serve", "--worker"]
    command += ["--lambda-backend-reason", settings.lambda_backend_reason]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    workers: dict[int, asyncio.subprocess.Process] = {}
    failed = False

    async def keep_running(slot: int) -> None:
        nonlocal failed
        while not stop.is_set():
            started = loop.time()
            process = await asyncio.create_subprocess_exec(*command, env=environment)
            workers[slot] = process
            code = await process.wait()
            if stop.is_set():
                return
            if loop.time() - started < WORKER_MIN_UPTIME_SECONDS:
                logger.error("worker %d exited with %s right after starting; stopping all workers", slot, code)
                failed = True
                stop.set()
                return
            logger.warning("worker %d (pid %d) exited with %s; starting another", slot, process.pid, code)
            # A pause, so that a worker dying over and over does not spin the parent.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), WORKER_RESTART_DELAY_SECONDS)

    logger.info(
        "starting %d workers on REST port %s and gRPC port %s", settings.workers, settings.rest_port, settings.grpc_port
    )
    slots = [asyncio.ensure_future(keep_running(slot)) for slot in range(settings.workers)]
    await stop.wait()
    for process in workers.values():
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
    deadline = settings.shutdown_grace_seconds + WORKER_STOP_MARGIN_SECONDS
    for process in workers.values():
        try:
            await asyncio.wait_for(process.wait(), deadline)
        except TimeoutError:
            logger.error("worker pid %d did not stop within %gs; killing it", process.pid, deadline)
            process.kill()
            await process.wait()
            failed = True
    await asyncio.gather(*slots, return_exceptions=True)
    failed = failed or any(process.returncode not in (0, None) for process in workers.values())
    logger.info("%s stopped (%d workers)", MODULE_NAME, len(workers))
    return 1 if failed else 0


async def _clients_command(settings: Settings, arguments: argparse.Namespace) -> int:
    database = await asyncio.to_thread(Database, settings.database_url, 1)
    clients = ClientStore(database)
    try:
        if arguments.action == "list":
            for client in await clients.list():
                state = "active" if client.active else "disabled"
                patterns = ",".join(client.allowed_patterns) or "*"
                created = client.created_at.isoformat(sep=" ", timespec="seconds") if client.created_at else "-"
                print(f"{client.client_id}\t{state}\tfunctions={patterns}\tcreated={created}")
            return 0
        if arguments.action == "create":
            if await clients.get(arguments.client_id) is not None:
                print(f"client {arguments.client_id} exists; use 'rotate' for a new secret", file=sys.stderr)
                return 1
            secret = new_secret()
            patterns = validate_patterns(arguments.allow or [])
            await clients.save(arguments.client_id, hash_secret(secret), patterns, arguments.description or "")
            print(f"created client {arguments.client_id}\nclient_secret: {secret}\n(shown once; store it now)")
            return 0
        if arguments.action == "rotate":
            secret = new_secret()
            if not await clients.set_secret_hash(arguments.client_id, hash_secret(secret)):
                print(f"no client {arguments.client_id}", file=sys.stderr)
                return 1
            print(f"new secret for {arguments.client_id}\nclient_secret: {secret}\n(shown once; store it now)")
            return 0
        active = arguments.action == "enable"
        if not await clients.set_active(arguments.client_id, active):
            print(f"no client {arguments.client_id}", file=sys.stderr)
            return 1
        print(f"client {arguments.client_id} {'enabled' if active else 'disabled'}")
        return 0
    finally:
        await asyncio.to_thread(database.close)


def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="app.py", description="Lambda Action Module")
    commands = parser.add_subparsers(dest="command")
    serve_command = commands.add_parser("serve", help="serve the API (the default)")
    # Internal: a worker started by the parent process when WORKERS > 1.
    serve_command.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    serve_command.add_argument("--lambda-backend-reason", help=argparse.SUPPRESS)
    clients = commands.add_parser("clients", help="manage API clients").add_subparsers(dest="action", required=True)
    create = clients.add_parser("create", help="create a client and print its secret once")
    create.add_argument("client_id")
    create.add_argument("--allow", action="append", metavar="PATTERN", help="function name pattern (repeatable)")
    create.add_argument("--description")
    clients.add_parser("list", help="list clients")
    for action, text in (("disable", "disable a client"), ("enable", "enable a client"), ("rotate", "new secret")):
        clients.add_parser(action, help=text).add_argument("client_id")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Serve (no arguments, or `serve`), or manage clients (`clients ...`)."""
    arguments = _argument_parser().parse_args(argv)
    try:
        settings = load_settings(environment_with_dotenv())
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    configure_logging(settings)
    try:
        if arguments.command == "clients":
            return asyncio.run(_clients_command(settings, arguments))
        worker = bool(getattr(arguments, "worker", False))
        if worker and arguments.lambda_backend_reason:
            settings = replace(settings, lambda_backend_reason=arguments.lambda_backend_reason)
        elif not worker:
            settings = choose_lambda_backend(settings, os.environ)
            check_ports_free(settings)
        if settings.workers > 1 and not worker:
            return asyncio.run(supervise(settings))
        asyncio.run(serve(settings, worker=worker))
    except ServiceError as error:
        logger.error("%s", error.message)
        return 1
    except OSError as error:
        logger.error("cannot serve: %s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
