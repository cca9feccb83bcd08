"""The servers the benchmark starts as child processes, how they end with it, and what /proc says of them.

Every child is started from the main thread with PR_SET_PDEATHSIG, so the kernel sends it SIGTERM when the
benchmark ends however abruptly (even SIGKILL), and in a session of its own, so a Ctrl-C meant for the
benchmark reaches it only through the benchmark's orderly stop.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

_PR_SET_PDEATHSIG = 1
_CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
# What a child inherits of the benchmark's environment; everything else it is given explicitly, so no AWS
# profile, endpoint or module setting of the caller's shell changes what is measured.
_INHERITED_VARIABLES = ("PATH", "HOME", "LANG", "TMPDIR", "TZ", "USER")


class ChildFailed(RuntimeError):
    """A child did not come up; the message carries the end of its log."""


class Child:
    """A server process the benchmark started: its pid, its log file, and `stop()`."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.name = name
        self.process = process
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait up to `timeout` seconds for an orderly stop, then SIGKILL."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def child_environment(variables: Mapping[str, str]) -> dict[str, str]:
    """A child's whole environment: the few inherited variables, the locale, and `variables`."""
    inherited = {
        name: value for name, value in os.environ.items() if name in _INHERITED_VARIABLES or name.startswith("LC_")
    }
    return {**inherited, **variables}


def spawn(name: str, command: Sequence[str], *, cwd: Path, env: Mapping[str, str], log_path: Path) -> Child:
    """Start `command` with its output in `log_path`; it dies with this process."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent(),
            start_new_session=True,
        )
    return Child(name, process, log_path)


def _die_with_parent() -> Callable[[], None]:
    parent = os.getpid()
    libc = ctypes.CDLL(None, use_errno=True)

    def set_death_signal() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the benchmark ended before the death signal was armed
            os._exit(1)

    return set_death_signal


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports nothing listens on right now."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def wait_for_port(child: Child, port: int, timeout: float = 60.0) -> None:
    """Return once `port` accepts connections; ChildFailed if the child ends or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        _check_alive(child)
        with socket.socket() as probe:
            probe.settimeout(1.0)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline:
            raise ChildFailed(f"{child.name} did not listen on port {port} within {timeout:g} s:\n{child.log_tail()}")
        time.sleep(0.05)


def wait_for_http(child: Child, url: str, timeout: float = 60.0) -> None:
    """Return once `url` answers at all (any status); ChildFailed if the child ends or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        _check_alive(child)
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise ChildFailed(
                    f"{child.name} did not answer {url} within {timeout:g} s:\n{child.log_tail()}"
                ) from None
            time.sleep(0.05)


def post_json(url: str, body: Mapping[str, Any], timeout: float = 30.0) -> Any:
    """POST `body` as JSON and return the decoded answer; the error's body when the status is not 2xx."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise ChildFailed(f"POST {url} answered {error.code}: {error.read()[:500]!r}") from None


def _check_alive(child: Child) -> None:
    if not child.running:
        raise ChildFailed(f"{child.name} ended with status {child.process.returncode}:\n{child.log_tail()}")


def rss_kb(pid: int) -> int:
    """The process's resident set size in kB, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line")


def cpu_seconds(pid: int) -> float:
    """CPU time the process has used, user and system, all its threads, from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces and parentheses: count the fields after its closing one.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _CLOCK_TICKS_PER_SECOND
