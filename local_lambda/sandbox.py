"""A worker's confinement: who it runs as, what it may import, its private temporary folder, its memory.

Lambda runs a handler as an unprivileged user (`sbx_user1051`) over a read-only `/var/task`, with its own
`/tmp`, Python's standard library, the function's code and the boto3 Lambda provides. Here, on the host:

- Imports: the worker's interpreter starts isolated (`-I -S`: no site-packages, no PYTHON* variables, not the
  gateway's folders) and the worker puts the code folder, its dependency cache and a folder of links to this
  process's own boto3, botocore and what they need on sys.path, in that order.
- User: when the runtime runs as root, workers run as SANDBOX_USER (created with `useradd --system` when
  absent; a fixed uid when it cannot be), through util-linux's `setpriv`. The user keeps one capability,
  CAP_DAC_READ_SEARCH, so that it reads the interpreter, the code and the dependencies wherever the host keeps
  them (a pyenv interpreter under /root, a functions folder under a private temporary folder), while it can
  write nothing it does not own: the code folder is read-only to the handler.
- /tmp: each function gets a folder of its own (TMPDIR, which `tempfile` follows), owned by the worker's user
  and removed when the runtime stops. The literal /tmp is still the host's: a private mount over it (a mount
  namespace, which root could make) would hide whatever the worker needs under /tmp (its code, the provided
  packages' links, a functions folder in a temporary folder) unless every such path moved to a fixed place
  such as Lambda's /var/task, changing the paths a handler sees and reports.
- Memory: `resident_kb` is what the runtime samples while an invocation runs (see local_lambda/pool.py).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

# Lambda's name for the user a handler runs as.
SANDBOX_USER = "sbx_user1051"
# The uid and gid used when the user cannot be created (no useradd): what matters is that it is not root.
FALLBACK_SANDBOX_ID = 993
# What Lambda's Python runtime provides besides the standard library: boto3 and what it imports.
PROVIDED_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3")


@dataclass(frozen=True)
class SandboxIdentity:
    """The unprivileged user and group a worker runs as."""

    uid: int
    gid: int


@dataclass(frozen=True)
class WorkerLaunch:
    """How one worker process starts: the interpreter, its environment, the imports after the code, its user."""

    interpreter: str
    environment: dict[str, str]
    import_paths: tuple[str, ...]  # after the code folder, in this order
    identity: SandboxIdentity | None = None
    # Where the interpreter keeps the bytecode it compiles, instead of __pycache__ folders beside the sources.
    bytecode_dir: str | None = None

    def command(self, script: Path, arguments: list[str]) -> list[str]:
        """The command line starting `script` with `arguments` as this launch says."""
        python = [
            self.interpreter,
            "-I",  # isolated: no site-packages of the user, no PYTHON* variables, not the script's folder
            "-S",  # no site-packages at all: the handler gets the standard library and what import_paths give
            "-u",  # unbuffered, so what a handler printed before a timeout is in its log
            "-X",
            "utf8",  # Lambda's Python runs with LANG=en_US.UTF-8
            *(["-X", f"pycache_prefix={self.bytecode_dir}"] if self.bytecode_dir else []),
            str(script),
            *arguments,
            *self.import_paths,
        ]
        return python if self.identity is None else [*_as_user(self.identity), *python]


def _as_user(identity: SandboxIdentity) -> list[str]:
    """The command prefix running a command as `identity`, keeping only the capability to read (see above)."""
    return [
        shutil.which("setpriv") or "setpriv",
        f"--reuid={identity.uid}",
        f"--regid={identity.gid}",
        "--clear-groups",
        "--no-new-privs",
        "--inh-caps=-all,+dac_read_search",
        "--ambient-caps=+dac_read_search",
        "--bounding-set=-all,+dac_read_search",
        "--",
    ]


def sandbox_identity() -> SandboxIdentity | None:
    """The user workers run as: SANDBOX_USER when this process is root (and can switch), else None (as itself)."""
    if os.geteuid() != 0:
        return None
    if shutil.which("setpriv") is None:
        logger.warning("running as root without util-linux's setpriv: handlers run as root too")
        return None
    entry: pwd.struct_passwd | None
    try:
        entry = pwd.getpwnam(SANDBOX_USER)
    except KeyError:
        entry = _create_sandbox_user()
    identity = (
        SandboxIdentity(FALLBACK_SANDBOX_ID, FALLBACK_SANDBOX_ID)
        if entry is None
        else SandboxIdentity(entry.pw_uid, entry.pw_gid)
    )
    # Root in a container may lack the capabilities to change user: then every worker would fail to start.
    try:
        switched = subprocess.run([*_as_user(identity), "true"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        logger.warning("cannot run workers as %s (%s): handlers run as root", SANDBOX_USER, error)
        return None
    if switched.returncode != 0:
        reason = switched.stderr.decode(errors="replace").strip()
        logger.warning("cannot run workers as %s (%s): handlers run as root", SANDBOX_USER, reason)
        return None
    return identity


def _create_sandbox_user() -> pwd.struct_passwd | None:
    command = [
        "useradd",
        "--system",
        "--user-group",
        "--no-create-home",
        "--home-dir",
        "/nonexistent",
        "--shell",
        "/usr/sbin/nologin",
        SANDBOX_USER,
    ]
    try:
        subprocess.run(command, check=False, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        logger.warning(
            "cannot create the user %s (%s): workers run as uid %s", SANDBOX_USER, error, FALLBACK_SANDBOX_ID
        )
        return None
    try:  # another runtime may have created it at the same moment: either way it exists now, or it cannot
        return pwd.getpwnam(SANDBOX_USER)
    except KeyError:
        logger.warning("cannot create the user %s: workers run as uid %s", SANDBOX_USER, FALLBACK_SANDBOX_ID)
        return None


class SandboxFolders:
    """The runtime's private folder: each function's temporary folder and the provided packages' links.

    Created on first use, removed by `remove()` (when the runtime stops).
    """

    def __init__(self, identity: SandboxIdentity | None) -> None:
        self.identity = identity
        self._root: Path | None = None
        self._provided: Path | None = None

    @property
    def root(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="local-lambda-"))
        return self._root

    def function_tmp(self, function_name: str) -> Path:
        """The function's own temporary folder (its TMPDIR), writable by the worker's user only."""
        return self._owned_folder(self.root / "tmp" / function_name)

    def _owned_folder(self, folder: Path) -> Path:
        if not folder.is_dir():
            folder.mkdir(parents=True, mode=0o700)
            if self.identity is not None:
                os.chown(folder, self.identity.uid, self.identity.gid)
        return folder

    def function_bytecode(self, function_name: str) -> Path:
        """A folder for the bytecode a function's worker compiles, writable by the worker's user only.

        For an interpreter other than the runtime's: the provided boto3 has no bytecode for it, and the
        worker's user may not write any beside the sources, so each cold start would compile boto3 again
        (about 0.3 s). One folder per function, so that no function can plant bytecode another one runs.
        """
        return self._owned_folder(self.root / "bytecode" / function_name)

    def provided_packages(self) -> Path:
        """A folder of links to this process's boto3 and what it needs, as Lambda's runtime provides them."""
        if self._provided is None:
            folder = self.root / "provided"
            folder.mkdir(exist_ok=True)
            for name in PROVIDED_PACKAGES:
                spec = importlib.util.find_spec(name)
                if spec is None or spec.origin is None:
                    continue
                origin = Path(spec.origin)
                # A package is its folder; a single-module distribution (six) its file.
                source = origin.parent if origin.name == "__init__.py" else origin
                link = folder / source.name
                if not link.exists():
                    link.symlink_to(source)
            self._provided = folder
        return self._provided

    def remove(self) -> None:
        """Remove every function's temporary folder and the links."""
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
            self._provided = None


def resident_kb(pid: int) -> int | None:
    """A process's resident size in KiB (from /proc), None when it has ended or there is no /proc."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            fields = statm.read().split()
    except OSError:
        return None
    with contextlib.suppress(IndexError, ValueError):
        return int(fields[1]) * _PAGE_KB
    return None


_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024 if hasattr(os, "sysconf") else 4
