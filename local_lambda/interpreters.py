"""Which Python runs a function: the one its runtime (python3.12, python3.13, ...) names, when installed.

Candidates for `pythonX.Y`, in order: the interpreters named in LOCAL_LAMBDA_PYTHONS (paths separated by
`os.pathsep`), this process's own interpreter, `pythonX.Y` on PATH, and pyenv's installations
(`$PYENV_ROOT/versions/X.Y.*`, default ~/.pyenv). Each is run once to ask its version (a pyenv shim on PATH
for a version pyenv does not have fails, and a name may lie), and the answer is remembered. With none, the
function runs on this process's Python, and its first invocation's log says so.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

INTERPRETERS_VARIABLE = "LOCAL_LAMBDA_PYTHONS"
_RUNTIME_VERSION = re.compile(r"python(\d+)\.(\d+)")
_PROBE_SECONDS = 10.0
HOST_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"


@dataclass(frozen=True)
class Interpreter:
    """The interpreter a function runs on, and why: `notice` is set when it is not the one asked for."""

    path: str
    version: str  # "3.12"
    notice: str | None = None


class Interpreters:
    """Finds and remembers the interpreter for each runtime name."""

    def __init__(self, named: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> None:
        # `named`: the runtime's LOCAL_LAMBDA_PYTHONS setting; `environ`: where PATH and pyenv's root are read.
        environ = os.environ if environ is None else environ
        self._named = list(named)
        self._path = environ.get("PATH", "")
        self._pyenv_root = environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
        self._versions: dict[str, str | None] = {}  # candidate path -> the version it runs, None if it fails
        self._chosen: dict[str, Interpreter] = {}

    def for_runtime(self, runtime: str) -> Interpreter:
        """The interpreter for a runtime name such as python3.12 (this process's own when none is found)."""
        chosen = self._chosen.get(runtime)
        if chosen is None:
            chosen = self._chosen[runtime] = self._choose(runtime)
        return chosen

    def known(self, runtime: str) -> Interpreter | None:
        """The interpreter already chosen for a runtime name, None when it has not been looked for yet."""
        return self._chosen.get(runtime)

    def _choose(self, runtime: str) -> Interpreter:
        match = _RUNTIME_VERSION.fullmatch(runtime)
        wanted = f"{match[1]}.{match[2]}" if match else None
        if wanted == HOST_VERSION:
            return Interpreter(sys.executable, HOST_VERSION)
        if wanted is not None:
            for candidate in self._candidates(wanted):
                if self._version_of(candidate) == wanted:
                    logger.info("%s runs on %s", runtime, candidate)
                    return Interpreter(candidate, wanted)
        notice = (
            f"local runtime: no {runtime} interpreter found (set {INTERPRETERS_VARIABLE} to name one); "
            f"running on Python {HOST_VERSION} at {sys.executable}"
        )
        logger.warning("%s", notice)
        return Interpreter(sys.executable, HOST_VERSION, notice)

    def _candidates(self, version: str) -> list[str]:
        candidates = list(self._named)
        on_path = shutil.which(f"python{version}", path=self._path)
        if on_path:
            candidates.append(on_path)
        pattern = os.path.join(glob.escape(self._pyenv_root), "versions", f"{version}.*", "bin", f"python{version}")
        candidates.extend(sorted(glob.glob(pattern), reverse=True))
        return candidates

    def _version_of(self, candidate: str) -> str | None:
        if candidate not in self._versions:
            self._versions[candidate] = _probe(candidate)
        return self._versions[candidate]


def _probe(candidate: str) -> str | None:
    """The X.Y version `candidate` runs as, None when it does not run (a shim for a missing version, say)."""
    try:
        completed = subprocess.run(
            [candidate, "-I", "-S", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            timeout=_PROBE_SECONDS,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        logger.info("interpreter %s does not run: %s", candidate, error)
        return None
    if completed.returncode != 0:
        logger.info("interpreter %s does not run: exit status %s", candidate, completed.returncode)
        return None
    return completed.stdout.decode(errors="replace").strip() or None
