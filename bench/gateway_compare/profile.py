"""Where the module's time goes under load: py-spy samples its process, and the stacks are summed by area.

py-spy's raw output is one line per distinct stack, `frame;frame;...;frame count`, outermost first. A sample
counts toward the area of its innermost frame that belongs to a known area, so "botocore" is time spent in
botocore's own code or in what it calls that no area claims; the module's own areas count only its own frames.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

SAMPLES_PER_SECOND = 200

# Areas, tried in order on the file of a frame (as py-spy shows it: relative to site-packages or to the working
# directory, or a bare standard-library module name); the first prefix that matches names the frame's area.
_AREAS = (
    ("botocore", ("botocore/", "boto3/", "urllib3/", "s3transfer/", "http/client.py", "socket.py", "ssl.py")),
    ("grpc", ("grpc/",)),
    ("hypercorn/quart", ("hypercorn/", "quart/", "werkzeug/", "h11/", "h2/", "quart_schema/", "pydantic")),
    ("pydal/psycopg2", ("pydal/", "psycopg2/")),
    ("jwt", ("jwt/",)),
    ("protobuf", ("google/protobuf/",)),
    ("module: journal and shipper", ("services/journal.py", "services/shipper.py", "services/invocation_log.py")),
    ("module: auth", ("services/auth.py",)),
    ("module: service", ("services/",)),
    ("module: gRPC servicer", ("grpc_api/",)),
    ("module: REST routes", ("routes/",)),
    ("asyncio", ("asyncio/",)),
    ("threads", ("threading.py", "concurrent/futures/", "queue.py")),
    ("logging", ("logging/",)),
    ("json", ("json/",)),
)


def py_spy_command(pid: int, seconds: float, out_path: Path, *, gil_only: bool) -> list[str]:
    """The py-spy command that samples `pid` for `seconds` into `out_path` (raw, one stack per line)."""
    command = [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid)]
    command += ["--duration", str(max(1, round(seconds))), "--rate", str(SAMPLES_PER_SECOND), "--format", "raw"]
    command += ["--output", str(out_path), "--nonblocking"]
    if gil_only:
        command.append("--gil")
    return command


def start_py_spy(pid: int, seconds: float, out_path: Path, *, gil_only: bool) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        py_spy_command(pid, seconds, out_path, gil_only=gil_only),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def area_of(frame: str) -> str | None:
    """The area of a frame written as `function (path:line)`, or None when no area claims its file."""
    path = frame[frame.rfind("(") + 1 :].rpartition(":")[0]
    for area, prefixes in _AREAS:
        if path.startswith(prefixes):
            return area
    return None


def summarise(raw_lines: Iterable[str], calls: int, rate: int = SAMPLES_PER_SECOND) -> dict[str, float]:
    """Milliseconds per call that threads holding the GIL spent in each area, largest first.

    `other` is for stacks no area claims; `all` is the sum.
    """
    counts: Counter[str] = Counter()
    for line in raw_lines:
        stack, _, count_text = line.rstrip("\n").rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        area = next((area for area in map(area_of, reversed(frames)) if area is not None), "other")
        counts[area] += int(count_text)
    if not calls:
        return {}
    per_call = {area: round(count * 1000 / rate / calls, 3) for area, count in counts.most_common()}
    per_call["all"] = round(sum(counts.values()) * 1000 / rate / calls, 3)
    return per_call
