"""waddlebot-command-handler: answers a chat command such as {"command": "!help", "user": "john"}.

The answer is {"statusCode": 200, "body": "<the reply to post in chat>"}; a command it does not know, or bad
arguments, get statusCode 400 with a body that says what to type instead.
"""

import os
import random
import re

COMMANDS = {
    "!help": "list the commands I know",
    "!hello": "say hello",
    "!roll": "roll dice, such as !roll 2d6 (default 1d6)",
    "!echo": "repeat what you say, such as !echo hi there",
}
_DICE = re.compile(r"(\d{1,2})?d(\d{1,4})")
MAX_DICE = 20
MAX_SIDES = 1000


def _reply(status_code, body):
    return {"statusCode": status_code, "body": body}


def _help(user, arguments):
    listed = ", ".join(f"{command} ({what})" for command, what in COMMANDS.items())
    return _reply(200, f"@{user}, here are the commands I know: {listed}")


def _hello(user, arguments):
    return _reply(200, f"Hello @{user}, I'm {os.environ.get('BOT_NAME', 'WaddleBot')}!")


def _roll(user, arguments):
    match = _DICE.fullmatch(arguments or "1d6")
    count = int(match.group(1) or 1) if match else 0
    sides = int(match.group(2)) if match else 0
    if not (1 <= count <= MAX_DICE and 2 <= sides <= MAX_SIDES):
        return _reply(
            400, f"@{user}, try !roll NdM with N from 1 to {MAX_DICE} and M from 2 to {MAX_SIDES}, such as !roll 2d6"
        )
    rolls = [random.randint(1, sides) for _ in range(count)]
    shown = " + ".join(str(roll) for roll in rolls)
    total = f" = {sum(rolls)}" if count > 1 else ""
    return _reply(200, f"@{user} rolled {count}d{sides}: {shown}{total}")


def _echo(user, arguments):
    if not arguments:
        return _reply(400, f"@{user}, tell me what to repeat, such as !echo hi there")
    return _reply(200, arguments)


_HANDLERS = {"!help": _help, "!hello": _hello, "!roll": _roll, "!echo": _echo}


def lambda_handler(event, context):
    """Answer one chat command; arguments come after the command or in "args"."""
    event = event if isinstance(event, dict) else {}
    user = str(event.get("user") or "there")
    words = str(event.get("command") or "").strip().split(maxsplit=1)
    command = words[0].lower() if words else ""
    arguments = event.get("args", words[1] if len(words) > 1 else "")
    if isinstance(arguments, list):
        arguments = " ".join(str(argument) for argument in arguments)
    handler = _HANDLERS.get(command)
    if handler is None:
        asked = f"'{command}'" if command else "no command"
        return _reply(400, f"Sorry @{user}, I don't know {asked}. Type !help to see the commands I know.")
    return handler(user, str(arguments).strip())
