"""A version's code on disk: its files (never through a link leading outside the functions folder), a cheap
fingerprint that changes with any edit, and the SHA-256 Lambda reports."""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from local_lambda.manifest import ManifestError


@dataclass(frozen=True)
class CodeSnapshot:
    """The state of a version's code files: a fingerprint that changes when any file does, and their size."""

    fingerprint: str
    size: int
    modified_ns: int


def check_link_inside(path: Path | str, root: Path) -> None:
    """ManifestError when the symbolic link `path` leads outside `root`, the functions folder."""
    target = os.path.realpath(path)
    if not Path(target).is_relative_to(root):
        raise ManifestError(f"{path} is a symbolic link to {target}, outside the functions folder {root}")


def _code_files(code_dir: Path, excluded: frozenset[str], root: Path) -> list[tuple[str, os.stat_result]]:
    """A version's code files, relative paths sorted, without caches, hidden files and `excluded` top-level names.

    ManifestError when any of them is a symbolic link leading outside `root`, as the handler would import it.
    """
    files: list[tuple[str, os.stat_result]] = []
    pending = [(str(code_dir), "")]
    while pending:
        directory, prefix = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:  # removed, unreadable: not code this runtime can see either
            continue
        for entry in entries:
            name = entry.name
            if name.startswith(".") or name == "__pycache__" or (not prefix and name in excluded):
                continue
            relative = prefix + name
            if entry.is_symlink():
                check_link_inside(entry.path, root)
            # Directories are not followed through symbolic links, so that a link loop cannot hang a request.
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append((entry.path, relative + "/"))
                elif entry.is_file():
                    files.append((relative, entry.stat()))
            except OSError:  # removed while scanning, or a link that loops
                continue
    files.sort(key=lambda item: item[0])
    return files


def scan_code(code_dir: Path, excluded: frozenset[str], root: Path) -> CodeSnapshot:
    """The code's fingerprint: paths, sizes, modification times and inodes, so any edit or replacement shows."""
    files = _code_files(code_dir, excluded, root)
    state = repr([(path, stat.st_mtime_ns, stat.st_size, stat.st_ino) for path, stat in files]).encode()
    return CodeSnapshot(
        fingerprint=hashlib.blake2b(state, digest_size=16).hexdigest(),
        size=sum(stat.st_size for _, stat in files),
        modified_ns=max((stat.st_mtime_ns for _, stat in files), default=0),
    )


def code_sha256(code_dir: Path, excluded: frozenset[str], root: Path) -> str:
    """The base64 SHA-256 of a version's code: each file's relative path and content, in path order.

    `root` is the functions folder: ManifestError when a code file links outside it.
    """
    digest = hashlib.sha256()
    for relative, _ in _code_files(code_dir, excluded, root):
        digest.update(relative.encode() + b"\0")
        try:
            digest.update((code_dir / relative).read_bytes())
        except OSError:
            continue
        digest.update(b"\0")
    return base64.b64encode(digest.digest()).decode()
