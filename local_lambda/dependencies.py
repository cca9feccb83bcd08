"""A function's `requirements.txt`, installed with pip into a cache outside its folder, as `sam build` does.

Each install lives in `<cache>/<hash>/`, the hash taken over the requirements' text and the interpreter's
version: built once (into a staging folder, then renamed, so a half-built one is never used), reused by every
worker, version and function with the same requirements, and built afresh when they change. A file lock
keeps two builds of the same requirements from running at once, in this process or another runtime on the
same cache. pip runs in the code folder, so a requirement may name a wheel there by relative path; nothing
is written into the code folder.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path

from local_lambda.errors import LambdaApiError
from local_lambda.interpreters import Interpreter

logger = logging.getLogger(__name__)

REQUIREMENTS_FILE = "requirements.txt"
# How long one install may take before it is given up (a registry that does not answer, say).
INSTALL_TIMEOUT_SECONDS = 600.0
# How much of pip's output an install failure quotes: its last lines say what went wrong.
_QUOTED_LINES = 15


class DependencyInstallFailed(LambdaApiError):
    """pip could not install a function's requirements.txt; the message quotes pip's last lines.

    A 409 ResourceConflictException, as for a manifest that cannot be used: the function cannot run as it
    stands, and clients do not retry a 4xx (a 5xx would have them run pip four more times for nothing).
    """

    status = 409
    error_type = "ResourceConflictException"
    kind = "User"


class DependencyCache:
    """Installs requirements into `root`, once per distinct requirements and interpreter version."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self._building: dict[Path, asyncio.Lock] = {}

    async def packages_for(self, code_dir: Path, interpreter: Interpreter, function_name: str) -> Path | None:
        """The folder holding the code's requirements, installed now if they were not; None without requirements."""
        try:
            requirements = (code_dir / REQUIREMENTS_FILE).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise DependencyInstallFailed(f"{function_name}: cannot read {REQUIREMENTS_FILE}: {error}") from None
        digest = hashlib.sha256(interpreter.version.encode() + b"\0" + requirements).hexdigest()[:24]
        target = self.root / f"python{interpreter.version}-{digest}"
        if target.is_dir():
            return target
        lock = self._building.setdefault(target, asyncio.Lock())
        async with lock:
            if not target.is_dir():
                await asyncio.to_thread(self._build, target, code_dir, interpreter, function_name)
        return target

    def _build(self, target: Path, code_dir: Path, interpreter: Interpreter, function_name: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(target.with_name(target.name + ".lock"), "wb") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)  # another runtime may be building the same
            if target.is_dir():
                return
            staging = target.with_name(f"{target.name}.building-{os.getpid()}")
            shutil.rmtree(staging, ignore_errors=True)
            command = [
                interpreter.path,
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--no-warn-script-location",
                "--target",
                str(staging),
                "--requirement",
                str(code_dir / REQUIREMENTS_FILE),
            ]
            logger.info("%s: installing %s into %s", function_name, REQUIREMENTS_FILE, target)
            try:
                completed = subprocess.run(
                    command,
                    cwd=code_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    timeout=INSTALL_TIMEOUT_SECONDS,
                    env=_pip_environment(),
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as error:
                shutil.rmtree(staging, ignore_errors=True)
                raise DependencyInstallFailed(f"{function_name}: cannot install {REQUIREMENTS_FILE}: {error}") from None
            if completed.returncode != 0:
                shutil.rmtree(staging, ignore_errors=True)
                lines = completed.stdout.decode(errors="replace").strip().splitlines()[-_QUOTED_LINES:]
                raise DependencyInstallFailed(
                    f"{function_name}: pip could not install {REQUIREMENTS_FILE} (exit status "
                    f"{completed.returncode}):\n" + "\n".join(lines)
                )
            staging.mkdir(exist_ok=True)  # requirements naming nothing install nothing, and make no folder
            os.chmod(staging, 0o755)
            os.replace(staging, target)
            logger.info("%s: %s installed into %s", function_name, REQUIREMENTS_FILE, target)


def _pip_environment() -> dict[str, str]:
    """pip's environment: this process's, without variables that would install somewhere else."""
    environment = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "PIP_TARGET", "PIP_PREFIX", "PIP_USER", "VIRTUAL_ENV"):
        environment.pop(name, None)
    return environment
