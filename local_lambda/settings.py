"""The runtime's own settings, read once from a mapping (the environment), with messages naming the variable.

LOCAL_LAMBDA_MAX_CONCURRENCY      calls running at once across unreserved functions (default: what the host
                                  holds, see default_max_concurrency)
LOCAL_LAMBDA_EVENT_RETRY_DELAYS   seconds before the first and the second retry of a failed Event invocation
                                  (default 60,120, as Lambda's about a minute then two)
LOCAL_LAMBDA_DEAD_LETTER_DIR      where an Event invocation that failed for good is written, one JSON file
                                  each (default data/local_lambda/failed-events)
LOCAL_LAMBDA_PYTHONS              interpreters for functions asking another Python than the runtime's, paths
                                  separated by ':' (default none: see local_lambda/interpreters.py)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Lambda's default account concurrency per region, the most this runtime would ever run at once.
ACCOUNT_CONCURRENCY = 1000
# A worker is sized as Lambda's smallest (and default) function, and gets Lambda's share of CPU at that size:
# Lambda gives a function one vCPU per 1,769 MB.
WORKER_MEMORY_MB = 128
LAMBDA_MB_PER_VCPU = 1769
# Half the host's memory goes to workers; the rest stays for the service, its database and the system.
WORKER_MEMORY_SHARE = 0.5
DEFAULT_EVENT_RETRY_DELAYS = (60.0, 120.0)
DEFAULT_DEAD_LETTER_DIR = Path("data/local_lambda/failed-events")


class SettingsError(ValueError):
    """A setting cannot be used; the message names the variable and what it takes."""


@dataclass(frozen=True)
class RuntimeSettings:
    """How the runtime schedules calls and what it does with Event invocations that fail."""

    max_concurrency: int
    event_retry_delays: tuple[float, float] = DEFAULT_EVENT_RETRY_DELAYS
    dead_letter_dir: Path = DEFAULT_DEAD_LETTER_DIR
    # Interpreters named for functions' runtimes (python3.12...), tried before PATH and pyenv's.
    interpreters: tuple[str, ...] = ()


def runtime_settings(environ: Mapping[str, str]) -> RuntimeSettings:
    """The settings that `environ` gives, the defaults for those it leaves out; SettingsError naming a bad one."""
    max_text = environ.get("LOCAL_LAMBDA_MAX_CONCURRENCY", "").strip()
    if max_text:
        if not max_text.isdigit() or not 1 <= int(max_text) <= ACCOUNT_CONCURRENCY:
            raise SettingsError(f"LOCAL_LAMBDA_MAX_CONCURRENCY must be a whole number from 1 to {ACCOUNT_CONCURRENCY}")
        max_concurrency = int(max_text)
    else:
        max_concurrency = default_max_concurrency()
    delays = DEFAULT_EVENT_RETRY_DELAYS
    delays_text = environ.get("LOCAL_LAMBDA_EVENT_RETRY_DELAYS", "").strip()
    if delays_text:
        try:
            first, second = (float(part) for part in delays_text.split(","))
        except ValueError:
            first = second = -1.0
        if not (0 <= first <= 3600 and 0 <= second <= 3600):
            raise SettingsError(
                "LOCAL_LAMBDA_EVENT_RETRY_DELAYS must be two numbers of seconds from 0 to 3600, such as 60,120"
            )
        delays = (first, second)
    dead_letter_text = environ.get("LOCAL_LAMBDA_DEAD_LETTER_DIR", "").strip()
    dead_letter_dir = Path(dead_letter_text) if dead_letter_text else DEFAULT_DEAD_LETTER_DIR
    interpreters = tuple(path for path in environ.get("LOCAL_LAMBDA_PYTHONS", "").split(os.pathsep) if path.strip())
    return RuntimeSettings(max_concurrency, delays, dead_letter_dir.resolve(), interpreters)


def default_max_concurrency() -> int:
    """How many 128 MB Lambda sandboxes this host holds: the fewer of what its memory and its CPUs allow.

    Memory: half of it (the cgroup's limit when in a container), 128 MB a worker. CPU: Lambda's share at 128 MB,
    128/1769 of a vCPU, so about 13 workers a core: most handlers wait on I/O, as Lambda assumes in sizing them.
    """
    by_memory = int(_memory_bytes() * WORKER_MEMORY_SHARE) // (WORKER_MEMORY_MB * 1024 * 1024)
    by_cpu = _cpu_count() * LAMBDA_MB_PER_VCPU // WORKER_MEMORY_MB
    return max(1, min(by_memory, by_cpu, ACCOUNT_CONCURRENCY))


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may use, not all the host has
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _memory_bytes() -> int:
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()  # cgroup v2; "max" when unlimited
    except OSError:
        return physical
    return min(physical, int(limit)) if limit.isdigit() else physical
