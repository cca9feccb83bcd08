"""`python -m local_lambda`: serve a functions folder until SIGTERM or SIGINT.

`python -m local_lambda publish NAME` publishes the function's current code as its next version.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from local_lambda.errors import LambdaApiError
from local_lambda.publish import publish_version
from local_lambda.runtime import DEFAULT_CACHE_DIR
from local_lambda.server import LocalLambdaRuntime
from local_lambda.settings import SettingsError, runtime_settings

logger = logging.getLogger("local_lambda")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; the process's exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["publish"]:
        return _publish(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m local_lambda",
        description="Serve the Lambda API for the Python functions in a folder. Settings from the environment: "
        "LOCAL_LAMBDA_MAX_CONCURRENCY, LOCAL_LAMBDA_EVENT_RETRY_DELAYS, LOCAL_LAMBDA_DEAD_LETTER_DIR (see README).",
        epilog="python -m local_lambda publish NAME publishes a function's current code as its next version.",
    )
    parser.add_argument("--functions-dir", type=Path, default=Path("functions"), help="default: ./functions")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001, help="0 picks a free port (printed when ready)")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE_DIR,
        help=f"where functions' requirements.txt are installed (default: ./{DEFAULT_CACHE_DIR})",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)  # RuntimeProcess reads the URL from it
    parser.add_argument("--watch-fd", type=int, help=argparse.SUPPRESS)  # stop when this pipe's writer is gone
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    try:
        settings = runtime_settings(os.environ)
    except SettingsError as error:
        logger.error("%s", error)
        return 2
    logger.info(
        "at most %d calls at once across unreserved functions; failed Event invocations retried after %s s, "
        "then written to %s",
        settings.max_concurrency,
        " and ".join(f"{delay:g}" for delay in settings.event_retry_delays),
        settings.dead_letter_dir,
    )
    runtime = LocalLambdaRuntime(
        args.functions_dir, args.host, args.port, args.region, settings, cache_dir=args.cache_dir
    )
    try:
        await runtime.start()
    except OSError as error:
        logger.error("cannot listen on %s:%s: %s", args.host, args.port, error)
        return 1
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    if args.watch_fd is not None:

        def parent_gone() -> None:  # the pipe is never written: readable means its writer closed it
            loop.remove_reader(args.watch_fd)
            logger.info("the parent process is gone; stopping")
            stopping.set()

        loop.add_reader(args.watch_fd, parent_gone)
    print(f"local Lambda runtime listening on {runtime.endpoint_url}", flush=True)
    if args.ready_fd is not None:
        os.write(args.ready_fd, f"{runtime.endpoint_url}\n".encode())
        os.close(args.ready_fd)
    try:
        await stopping.wait()
    finally:
        await runtime.stop()
    logger.info("local Lambda runtime stopped")
    return 0


def _publish(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m local_lambda publish",
        description="Copy a function's current code into its next numbered version and record it in function.json.",
    )
    parser.add_argument("name", help="the function (its folder's name)")
    parser.add_argument("--functions-dir", type=Path, default=Path("functions"), help="default: ./functions")
    parser.add_argument("--description", help="the version's description (default: the function's)")
    args = parser.parse_args(argv)
    try:
        version = publish_version(args.functions_dir, args.name, args.description)
    except LambdaApiError as error:
        print(f"cannot publish {args.name}: {error.message}", file=sys.stderr)
        return 1
    print(f"{args.name}: version {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
