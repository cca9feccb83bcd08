"""What a bench smoke test checks once its run has ended: that no process it started is left."""

from __future__ import annotations

import os
from pathlib import Path


def processes_with(variable: bytes) -> list[int]:
    """Pids of the processes whose environment holds `variable` (NAME=value): a run's children inherit its TMPDIR."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if variable in environment:
            found.append(int(entry.name))
    return found
