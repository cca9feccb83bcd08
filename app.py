"""Wiring: the app factory, the module's services, logging, the server entry point and the client tool."""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.handlers
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig
from quart import Quart
from quart_schema import QuartSchema

from config import MODULE_NAME, MODULE_VERSION, Settings, SettingsError, environment_with_dotenv, load_settings
from routes import functions, health, invoke, token
from routes.context import EXTENSION_KEY, AppServices
from routes.errors import register_error_handlers
from services.auth import Authenticator, hash_secret, new_secret
from services.clients import ClientStore, validate_patterns
from services.database import Database
from services.errors import ServiceError
from services.invocation_log import InvocationLog
from services.lambda_client import build_lambda_client
from services.lambda_service import LambdaService

logger = logging.getLogger(__name__)

# Quart refuses larger bodies with 413: room for Lambda's 6 MB payload even when escaped inside a JSON string.
MAX_REQUEST_BYTES = 16 * 1024 * 1024
LOG_FILE_BYTES = 10 * 1024 * 1024
LOG_FILE_BACKUPS = 5
DEV_CLIENT_ID = "local-dev"


def create_app(settings: Settings, service: LambdaService, authenticator: Authenticator) -> Quart:
    """The Quart app serving the REST API over the given services."""
    app = Quart(MODULE_NAME)
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    QuartSchema(
        app,
        info={"title": "Lambda Action Module", "version": MODULE_VERSION},
        security_schemes={"bearer": {"type": "http", "scheme": "bearer", "bearer_format": "JWT"}},
        redoc_ui_path=None,
        scalar_ui_path=None,
    )
    app.extensions[EXTENSION_KEY] = AppServices(settings=settings, service=service, authenticator=authenticator)
    for blueprint in (health.blueprint, token.blueprint, invoke.blueprint, functions.blueprint):
        app.register_blueprint(blueprint)
    register_error_handlers(app)
    return app


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


async def build_module(settings: Settings, lambda_client: Any = None) -> Module:
    """Open the database, prepare clients, and build the services; `lambda_client` overrides boto3's."""
    database = await asyncio.to_thread(Database, settings.database_url, settings.database_pool_size)
    clients = ClientStore(database)
    await _prepare_clients(settings, clients)
    client = lambda_client if lambda_client is not None else build_lambda_client(settings)
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


async def _prepare_clients(settings: Settings, clients: ClientStore) -> None:
    if settings.bootstrap_client_id:
        created = await clients.save(settings.bootstrap_client_id, hash_secret(settings.bootstrap_client_secret))
        logger.info("bootstrap client %s %s", settings.bootstrap_client_id, "created" if created else "updated")
    if settings.secret_key_generated:
        secret = new_secret()
        await clients.save(DEV_CLIENT_ID, hash_secret(secret), description="development client, reset at each start")
        _announce_development_client(settings, secret)


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
    return config


async def serve(settings: Settings) -> None:
    """Serve the REST API until SIGTERM or SIGINT, then finish calls under way and stop."""
    module = await build_module(settings)
    app = create_app(settings, module.service, module.authenticator)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    logger.info(
        "%s %s starting: REST on %s:%s, Lambda backend %s (%s), database %s",
        MODULE_NAME,
        MODULE_VERSION,
        settings.host,
        settings.rest_port,
        settings.lambda_backend,
        module.service.endpoint_url,
        settings.database_kind,
    )
    try:
        await hypercorn_serve(app, hypercorn_config(settings), shutdown_trigger=stop.wait)
    finally:
        await module.close()
        logger.info("%s stopped", MODULE_NAME)


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
    commands.add_parser("serve", help="serve the API (the default)")
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
        asyncio.run(serve(settings))
    except ServiceError as error:
        logger.error("%s", error.message)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
