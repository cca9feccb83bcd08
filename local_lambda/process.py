"""RuntimeProcess: `python -m local_lambda` as a child process, for a parent that starts it once per host."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

_PACKAGE_PARENT = Path(__file__).resolve().parent.parent


class RuntimeProcess:
    """A running `python -m local_lambda` child: its `endpoint_url`, `pid`, and `stop()`."""

    def __init__(self, process: subprocess.Popen[bytes], endpoint_url: str, watch_fd: int | None = None) -> None:
        self.process = process
        self.endpoint_url = endpoint_url
        # The write end of a pipe the child watches: when this process ends, however abruptly, the pipe closes
        # and the child stops too, rather than lingering on its port.
        self._watch_fd = watch_fd

    @classmethod
    def start(
        cls,
        functions_dir: Path | str,
        host: str = "127.0.0.1",
        port: int = 9001,
        region: str = "us-east-1",
        ready_timeout: float = 10.0,
        log_level: str = "INFO",
        stdout: int | IO[bytes] | None = None,
        stderr: int | IO[bytes] | None = None,
        cache_dir: Path | str | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> RuntimeProcess:
        """Start the runtime and wait until it listens; RuntimeError if it exits or is not ready in time.

        Its ready line goes to `stdout` and its log to `stderr` (by default this process's own). It inherits this
        process's environment, with `environment` over it (the runtime's settings: LOCAL_LAMBDA_MAX_CONCURRENCY...).
        """
        ready_read, ready_write = os.pipe()
        watch_read, watch_write = os.pipe()
        environment = {**os.environ, **(environment or {})}
        # The child imports this package whatever its working directory.
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PACKAGE_PARENT), os.environ.get("PYTHONPATH")]))
        command = [
            sys.executable,
            "-m",
            "local_lambda",
            "--functions-dir",
            str(Path(functions_dir).resolve()),
            "--host",
            host,
            "--port",
            str(port),
            "--region",
            region,
            "--log-level",
            log_level,
            "--ready-fd",
            str(ready_write),
            "--watch-fd",
            str(watch_read),
            *(["--cache-dir", str(Path(cache_dir).resolve())] if cache_dir is not None else []),
        ]
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                pass_fds=(ready_write, watch_read),
                env=environment,
                # Its own session: a Ctrl-C meant for the parent must not stop the runtime while the parent still
                # drains calls that need it. The watched pipe stops it when the parent ends.
                start_new_session=True,
            )
        except BaseException:
            os.close(ready_read)
            os.close(watch_write)
            raise
        finally:
            os.close(ready_write)
            os.close(watch_read)
        try:
            line = _read_line(ready_read, ready_timeout)
        finally:
            os.close(ready_read)
        runtime = cls(process, line.decode().strip(), watch_write)
        if not line.endswith(b"\n"):
            returncode = runtime.stop()
            raise RuntimeError(
                f"the local Lambda runtime was not ready within {ready_timeout:g} s "
                f"(it ended with {returncode}; its log is on this process's stderr)"
            )
        logger.info("local Lambda runtime (pid %s) serving %s at %s", process.pid, functions_dir, runtime.endpoint_url)
        return runtime

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def port(self) -> int:
        port = urlsplit(self.endpoint_url).port
        assert port is not None
        return port

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, wait up to `timeout` seconds, then kill; the child's exit code (0 after a clean stop)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("local Lambda runtime (pid %s) did not stop in %g s; killing it", self.pid, timeout)
                self.process.kill()
                self.process.wait()
        if self._watch_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._watch_fd)
            self._watch_fd = None
        return self.process.returncode

    def __enter__(self) -> RuntimeProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_runtime_process(
    functions_dir: Path | str,
    host: str = "127.0.0.1",
    port: int = 9001,
    region: str = "us-east-1",
    ready_timeout: float = 10.0,
) -> RuntimeProcess:
    """Start `python -m local_lambda` as a child process and wait until it answers."""
    return RuntimeProcess.start(functions_dir, host, port, region, ready_timeout)


def _read_line(fd: int, timeout: float) -> bytes:
    """What the child writes to `fd` up to its first newline; shorter if it closes the pipe or time runs out."""
    deadline = time.monotonic() + timeout
    data = b""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poller.poll(remaining * 1000):
            break
        chunk = os.read(fd, 1024)
        if not chunk:
            break
        data += chunk
    return data
