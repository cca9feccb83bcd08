"""Wiring: the module's services, the REST app and the gRPC server built over them, and the entry point.

Serving lives in serving.py, the client command line in clients_cli.py, log handlers in logging_setup.py.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from quart import Quart

from clients_cli import add_clients_command, run_clients_command
from config import MODULE_NAME, Settings, SettingsError, environment_with_dotenv, load_settings
from grpc_api.interceptor import SERVICE_NAME, ServiceGuard
from grpc_api.server import GrpcServer, ModuleHealth
from grpc_api.servicer import LambdaActionServicer
from logging_setup import configure_logging
from routes import functions, health, history, invoke, metrics_endpoint, token, ui
from routes.context import EXTENSION_KEY
from routes.errors import register_error_handlers
from routes.json_body import JsonRulesRequest
from routes.openapi import install_openapi
from routes.request_ids import install_request_ids
from services.api_clients import ClientStore, prepare_clients, prepare_clients_once
from services.auth import Authenticator
from services.database import Database, connect_database, open_database
from services.errors import ServiceError
from services.history import InvocationHistory, LogReader
from services.invocation_log import InvocationLog
from services.journal import Journal
from services.lambda_client import LambdaClient, choose_lambda_backend, client_for_backend, cloudwatch_log_reader
from services.lambda_service import LambdaService
from services.metrics import Metrics
from serving import Servers, check_ports_free, run_on_event_loop, serve_process, supervise_workers

logger = logging.getLogger(__name__)

# Quart refuses larger bodies with 413: room for Lambda's 6 MB payload even when escaped inside a JSON string.
MAX_REQUEST_BYTES = 16 * 1024 * 1024


@dataclass
class Services:
    """Everything one process serves with: built once, shared by both transports."""

    settings: Settings
    database: Database
    clients: ClientStore
    invocation_log: InvocationLog
    authenticator: Authenticator
    service: LambdaService
    history: InvocationHistory
    metrics: Metrics

    async def close(self) -> None:
        """Let invocations under way finish and be recorded, ship the journal, then release threads and connections."""
        await self.service.close()
        await self.history.close()
        await self.metrics.close()
        self.authenticator.close()
        await self.invocation_log.close()
        await asyncio.to_thread(self.database.close)


async def build_services(
    settings: Settings, lambda_client: LambdaClient | None = None, *, prepare: bool = True
) -> Services:
    """Open the database, prepare clients (unless a parent did), and build the services over one Lambda client.

    `lambda_client` replaces the one LAMBDA_BACKEND selects (tests pass their own).
    """
    database = await connect_database(settings)
    clients = ClientStore(database)
    if prepare:
        await prepare_clients(settings, clients)
    invocation_log = InvocationLog(database, Journal(Path(settings.log_spool_dir), settings.log_spool_max_bytes))
    try:
        await invocation_log.open()
    except BaseException:
        await asyncio.to_thread(database.close)
        raise
    metrics = Metrics()
    metrics.start_sampling(invocation_log.state)
    service = LambdaService(settings, lambda_client or client_for_backend(settings), invocation_log, metrics=metrics)
    history = InvocationHistory(
        database,
        lambda_backend=settings.lambda_backend,
        read_logs=_log_reader(settings, service),
        retention_days=settings.log_retention_days,
    )
    history.start()
    return Services(
        settings=settings,
        database=database,
        clients=clients,
        invocation_log=invocation_log,
        authenticator=Authenticator(
            settings, clients, on_refused=lambda reason: metrics.auth_failures.labels(reason).inc()
        ),
        service=service,
        history=history,
        metrics=metrics,
    )


def _log_reader(settings: Settings, service: LambdaService) -> LogReader | None:
    """Where the history reads an invocation's log lines: the embedded runtime (which serves FilterLogEvents for
    its recent invocations, at the Lambda client's endpoint), CloudWatch Logs with FETCH_FUNCTION_LOGS=true, else
    nowhere (the log's place is shown)."""
    if settings.lambda_backend == "local":
        return cloudwatch_log_reader(settings, endpoint_url=service.endpoint_url)
    return cloudwatch_log_reader(settings) if settings.fetch_function_logs else None


def create_app(services: Services) -> Quart:
    """The Quart app serving the REST API over `services`."""
    app = Quart(MODULE_NAME)
    app.request_class = JsonRulesRequest
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    install_openapi(app)
    app.extensions[EXTENSION_KEY] = services
    for blueprint in (
        health.blueprint,
        token.blueprint,
        invoke.blueprint,
        functions.blueprint,
        history.blueprint,
        metrics_endpoint.blueprint,
        ui.blueprint,
    ):
        app.register_blueprint(blueprint)
    register_error_handlers(app)
    install_request_ids(app)
    return app


def build_grpc_server(services: Services, *, reuse_port: bool = False) -> GrpcServer:
    """The gRPC server on GRPC_PORT (0 picks a free one); build it inside the running loop, then `start()` it."""
    settings = services.settings
    options = [
        ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
        ("grpc.max_send_message_length", settings.grpc_max_message_bytes),
        # grpc shares ports by default; one process per port unless WORKERS asks, so a clash fails loudly.
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]
    guard = ServiceGuard(services.authenticator)
    server = grpc.aio.server(options=options)
    guard.add_guarded_servicer(LambdaActionServicer(services.service, services.history), server)
    health_servicer = ModuleHealth(services.invocation_log.state)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
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
    return GrpcServer(server=server, port=port, health=health_servicer, guard=guard)


async def build_servers(settings: Settings, prepare: bool) -> Servers:
    """Both servers of one process over one set of services."""
    services = await build_services(settings, prepare=prepare)
    try:
        grpc_server = build_grpc_server(services, reuse_port=settings.workers > 1)
    except BaseException:
        await services.close()
        raise
    return Servers(
        rest_app=create_app(services),
        grpc_server=grpc_server,
        close=services.close,
        lambda_endpoint=services.service.endpoint_url,
        release_waiting=services.service.release_waiting,
        begin_draining=services.service.begin_draining,
    )


def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="app.py", description="Lambda Action Module")
    commands = parser.add_subparsers(dest="command")
    serve_command = commands.add_parser("serve", help="serve the API (the default)")
    # Internal: a worker started by the parent process when WORKERS > 1, watching a pipe from its parent.
    serve_command.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    serve_command.add_argument("--parent-fd", type=int, help=argparse.SUPPRESS)
    serve_command.add_argument("--lambda-backend-reason", help=argparse.SUPPRESS)
    commands.add_parser(
        "init-db",
        help="create the tables and indexes in DATABASE_URL, then exit (a one-off job; serving does it too)",
    )
    add_clients_command(commands)
    return parser


async def init_database(settings: Settings) -> None:
    """Create what the module needs in DATABASE_URL (tables, indexes, added columns) and close; DatabaseUnavailable
    when it cannot be reached."""
    async with open_database(settings, pool_size=1) as database:
        logger.info("the tables of lambda-action are ready in %s", database.engine)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve (no arguments, or `serve`), create the tables (`init-db`), or manage clients (`clients ...`); the exit
    status."""
    arguments = _argument_parser().parse_args(argv)
    try:
        settings = load_settings(environment_with_dotenv())
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    if arguments.command == "clients":
        # Only what goes wrong: the command's own output is what its user reads.
        configure_logging(settings, level=logging.WARNING)
    else:
        configure_logging(settings)
    try:
        if arguments.command == "clients":
            return asyncio.run(run_clients_command(settings, arguments))
        if arguments.command == "init-db":
            asyncio.run(init_database(settings))
            return 0
        worker = bool(getattr(arguments, "worker", False))
        if worker:
            settings = replace(settings, lambda_backend_reason=arguments.lambda_backend_reason or "")
        else:
            settings = choose_lambda_backend(settings, os.environ)
            check_ports_free(settings)
        if settings.workers > 1 and not worker:
            return run_on_event_loop(supervise_workers(settings, prepare_clients_once))
        run_on_event_loop(serve_process(settings, build_servers, parent_fd=arguments.parent_fd if worker else None))
    except ServiceError as error:
        logger.error("%s", error.message)
        return 1
    except OSError as error:
        logger.error("cannot serve: %s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
