"""`app.py clients ...`: create, list, enable, disable and rotate the API clients that may ask for tokens."""

from __future__ import annotations

import argparse
import sys

from config import Settings
from services.api_clients import ClientStore, validate_patterns
from services.client_secrets import hash_secret, new_secret
from services.database import open_database


def add_clients_command(commands: argparse._SubParsersAction) -> None:
    """The `clients` command and its actions, on the module's command line."""
    clients = commands.add_parser("clients", help="manage API clients").add_subparsers(dest="action", required=True)
    create = clients.add_parser("create", help="create a client and print its secret once")
    create.add_argument("client_id")
    create.add_argument("--allow", action="append", metavar="PATTERN", help="function name pattern (repeatable)")
    create.add_argument("--description")
    clients.add_parser("list", help="list clients")
    for action, text in (("disable", "disable a client"), ("enable", "enable a client"), ("rotate", "new secret")):
        clients.add_parser(action, help=text).add_argument("client_id")


async def run_clients_command(settings: Settings, arguments: argparse.Namespace) -> int:
    """Carry out one `clients` action; the exit status."""
    async with open_database(settings, pool_size=1) as database:
        clients = ClientStore(database)
        if arguments.action == "list":
            for client in await clients.list():
                state = "active" if client.active else "disabled"
                allowed = ",".join(client.allowed_patterns) or "*"
                created = client.created_at.isoformat(sep=" ", timespec="seconds") if client.created_at else "-"
                print(f"{client.client_id}\t{state}\tfunctions={allowed}\tcreated={created}")
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
