"""The invocation journal: a local, append-only record of every invocation, written before the database sees it.

A start entry is written before Lambda is called (a SIGKILL leaves it behind); an outcome entry is made durable
(fdatasync, one for all the calls that finish at about the same moment) before the caller gets its answer.
`services/shipper.py` copies entries to the database in batches and trims what it shipped.

On disk, under LOG_SPOOL_DIR:

    instance.lock           held by the process that owns the directory (the only process, or the WORKERS parent)
    <pid>-<ms>/lock         held by the process writing that folder: each process starts a folder of its own
    <pid>-<ms>/<n>.journal  segments of JSON lines, numbered in order

A segment is deleted once everything in it is in the database and no invocation started in it is still running.
A folder whose lock nobody holds was left by a process that ended: another process adopts it, completes what it
left running as interrupted, and ships it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.errors import JournalFull

logger = logging.getLogger(__name__)

INSTANCE_LOCK = "instance.lock"
_LOCK = "lock"
_SUFFIX = ".journal"
_MAKING = ".new"
# A segment this large is closed and a new one begun, so that shipped entries can be deleted in whole files.
SEGMENT_BYTES = 1024 * 1024

Entry = dict[str, Any]


class JournalInUse(OSError):
    """Another process holds the spool directory (or one of its journals)."""


def instance_lock(spool_dir: Path) -> int:
    """Hold LOG_SPOOL_DIR for this instance (released when the returned descriptor closes or the process ends).

    Two instances on one host must not share a spool directory: each would take the other's journals for
    abandoned ones.
    """
    spool_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(spool_dir / INSTANCE_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalInUse(
            f"LOG_SPOOL_DIR={spool_dir} is in use by another running instance; give each instance its own"
        ) from None
    return fd


@dataclass
class Segment:
    """One journal file: its number, its path, and how far the shipper has read it."""

    number: int
    path: Path
    # Bytes of whole entries in the file (appends are counted once written), and bytes already shipped.
    size: int = 0
    shipped: int = 0
    # Invocations started in this segment whose outcome is not yet written: it is kept until there are none.
    open_starts: int = 0


@dataclass
class JournalFolder:
    """The segments of one journal folder, in order; `own` for the folder this process writes."""

    path: Path
    lock_fd: int
    own: bool
    segments: list[Segment] = field(default_factory=list)

    def unshipped_bytes(self) -> int:
        return sum(segment.size - segment.shipped for segment in self.segments)

    def total_bytes(self) -> int:
        return sum(segment.size for segment in self.segments)


class Journal:
    """The journal of this process: appends entries, makes them durable in groups, and hands them to the shipper."""

    def __init__(self, spool_dir: Path, max_bytes: int) -> None:
        self.spool_dir = spool_dir
        # A new folder for every process: an earlier process's folder is never in the way, only adopted.
        self.name = f"{os.getpid()}-{int(time.time() * 1000)}"
        self.max_bytes = max_bytes
        self.folders: list[JournalFolder] = []
        self._fd = -1
        self._segment: Segment | None = None
        # Bytes written and bytes made durable since start: positions in one sequence across segments.
        self._written = 0
        self._synced = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._syncing: asyncio.Task[None] | None = None
        self._retired_fds: list[int] = []
        self._sync_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal-sync")
        # The segment each running invocation's start is in, so its outcome can release that segment.
        self._start_segment: dict[str, Segment] = {}
        # (segment number, end offset, wall time) of entries not yet shipped, oldest first: the shipping lag.
        self._unshipped_times: deque[tuple[int, int, float]] = deque()
        self._closed = False

    # -- opening -------------------------------------------------------------------------------------------

    def open(self) -> None:
        """Take this process's folder, complete what an earlier process left running, and adopt abandoned folders."""
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        # Made and locked under a name others skip, then renamed: nobody can take a new folder for an old one.
        making = self.spool_dir / f"{self.name}{_MAKING}"
        own = self._claim(making, own=True)
        if own is None:
            raise JournalInUse(f"the journal {making} is in use by another process")
        making.rename(self.spool_dir / self.name)
        own.path = self.spool_dir / self.name
        self.folders.append(own)
        for candidate in sorted(self.spool_dir.iterdir()):
            if candidate.is_dir() and candidate.name != self.name and not candidate.name.endswith(_MAKING):
                adopted = self._claim(candidate, own=False)
                if adopted is not None:
                    logger.info("adopting the journal %s left by a process that ended", candidate)
                    self.folders.append(adopted)
        self._start_new_segment()

    def _claim(self, path: Path, *, own: bool) -> JournalFolder | None:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        folder = JournalFolder(path=path, lock_fd=fd, own=own)
        folder.segments = [
            Segment(number=int(item.stem), path=item, size=_whole_entries_size(item))
            for item in sorted(path.glob(f"*{_SUFFIX}"), key=lambda item: int(item.stem))
            if item.stem.isdigit()
        ]
        _complete_interrupted(folder)
        return folder

    def _start_new_segment(self) -> None:
        own = self.folders[0]
        number = own.segments[-1].number + 1 if own.segments else 1
        segment = Segment(number=number, path=own.path / f"{number:010d}{_SUFFIX}")
        fd = os.open(segment.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if self._fd >= 0:
            # Made durable (and closed) by the next group sync: outcomes written to it may still be waiting.
            self._retired_fds.append(self._fd)
        self._fd = fd
        self._segment = segment
        own.segments.append(segment)

    # -- writing -------------------------------------------------------------------------------------------

    def check_room(self) -> None:
        """JournalFull when the journal holds LOG_SPOOL_MAX_BYTES: a new invocation could not be recorded."""
        held = self.unshipped_bytes()
        if held >= self.max_bytes:
            raise JournalFull(
                f"the invocation journal holds {held} bytes (LOG_SPOOL_MAX_BYTES={self.max_bytes}) that the "
                "database has not taken yet; invocations resume when it answers again: retry later"
            )

    def append_start(self, entry: Entry) -> None:
        """Write an invocation's start (before Lambda is called); it survives a SIGKILL from here on."""
        segment = self._append(entry)
        segment.open_starts += 1
        self._start_segment[entry["invocation_id"]] = segment

    async def append_outcome(self, entry: Entry) -> None:
        """Write an invocation's outcome and return once it is durable (one fdatasync for every outcome waiting)."""
        self._append(entry)
        started_in = self._start_segment.pop(entry["invocation_id"], None)
        if started_in is not None:
            started_in.open_starts -= 1
        await self._durable(self._written)

    def _append(self, entry: Entry) -> Segment:
        if self._closed:
            raise OSError("the invocation journal is closed")
        # ASCII with escapes: any text (a lone surrogate included) reads back exactly as it was written.
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode("ascii")
        segment = self._segment
        assert segment is not None
        if segment.size >= SEGMENT_BYTES:
            self._start_new_segment()
            segment = self._segment
            assert segment is not None
        written = 0
        while written < len(line):
            written += os.write(self._fd, line[written:])
        segment.size += len(line)
        self._written += len(line)
        self._unshipped_times.append((segment.number, segment.size, time.time()))
        return segment

    async def _durable(self, position: int) -> None:
        if self._synced >= position:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((position, waiter))
        if self._syncing is None or self._syncing.done():
            self._syncing = asyncio.ensure_future(self._sync_waiting())
        await waiter

    async def _sync_waiting(self) -> None:
        """fdatasync for everyone waiting; those who arrive meanwhile are covered by the next round."""
        loop = asyncio.get_running_loop()
        while self._waiters:
            target = self._written
            fds, self._retired_fds = [self._fd, *self._retired_fds], []
            try:
                await loop.run_in_executor(self._sync_thread, _sync_and_close_retired, fds)
            except OSError as error:
                failed = [waiter for _, waiter in self._waiters]
                self._waiters.clear()
                for waiter in failed:
                    if not waiter.done():
                        waiter.set_exception(OSError(f"the invocation journal could not be made durable: {error}"))
                return
            self._synced = max(self._synced, target)
            while self._waiters and self._waiters[0][0] <= self._synced:
                _, waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)

    # -- the shipper's side -------------------------------------------------------------------------------

    def read_unshipped(self, max_entries: int) -> tuple[list[tuple[Segment, int, Entry]], list[str]]:
        """Up to `max_entries` complete entries not yet shipped, oldest first, each with its segment and end offset.

        Also the folders' problems worth a log line (a line that is not JSON is skipped, never shipped).
        Runs on the shipper's thread; it only reads files the loop appends to.
        """
        entries: list[tuple[Segment, int, Entry]] = []
        problems: list[str] = []
        for folder in list(self.folders):
            for segment in list(folder.segments):
                if len(entries) >= max_entries:
                    return entries, problems
                size = segment.size
                if segment.shipped >= size:
                    continue
                with open(segment.path, "rb") as file:
                    file.seek(segment.shipped)
                    data = file.read(size - segment.shipped)
                offset = segment.shipped
                for raw in data.split(b"\n")[:-1]:
                    offset += len(raw) + 1
                    try:
                        entries.append((segment, offset, json.loads(raw)))
                    except ValueError:
                        problems.append(f"{segment.path} at byte {offset - len(raw) - 1}: not an entry, skipped")
                        entries.append((segment, offset, {}))
                    if len(entries) >= max_entries:
                        break
        return entries, problems

    def mark_shipped(self, shipped: list[tuple[Segment, int, Entry]]) -> None:
        """Record what the database now holds, and delete the segments nobody needs any more."""
        for segment, offset, _ in shipped:
            segment.shipped = max(segment.shipped, offset)
        while self._unshipped_times and self._is_shipped(*self._unshipped_times[0][:2]):
            self._unshipped_times.popleft()
        self._trim()

    def _is_shipped(self, number: int, end: int) -> bool:
        for folder in self.folders:
            if folder.own:
                for segment in folder.segments:
                    if segment.number == number:
                        return segment.shipped >= end
        return True

    def _trim(self) -> None:
        for folder in list(self.folders):
            for segment in list(folder.segments):
                if segment is self._segment:
                    continue
                if segment.open_starts > 0 or segment.shipped < segment.size:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    segment.path.unlink()
                folder.segments.remove(segment)
            if not folder.own and not folder.segments:
                self._release(folder)

    def _release(self, folder: JournalFolder) -> None:
        self.folders.remove(folder)
        with contextlib.suppress(OSError):
            (folder.path / _LOCK).unlink()
            folder.path.rmdir()
        os.close(folder.lock_fd)
        logger.info("the adopted journal %s is shipped and removed", folder.path)

    # -- state ---------------------------------------------------------------------------------------------

    def unshipped_bytes(self) -> int:
        """Bytes written to the journal that the database does not hold yet."""
        return sum(folder.unshipped_bytes() for folder in self.folders)

    def lag_seconds(self) -> float:
        """How long the oldest entry of this process not yet in the database has waited."""
        if not self._unshipped_times:
            return 0.0
        return max(0.0, time.time() - self._unshipped_times[0][2])

    def close(self) -> None:
        """Make everything durable and release the files (entries not shipped stay for the next start)."""
        if self._closed:
            return
        self._closed = True
        for fd in [self._fd, *self._retired_fds]:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.fdatasync(fd)
                    os.close(fd)
        self._sync_thread.shutdown(wait=True)
        for folder in self.folders:
            with contextlib.suppress(OSError):
                os.close(folder.lock_fd)


def interrupted_outcome(invocation_id: str, completed_at: str) -> Entry:
    """The outcome recorded for an invocation whose process ended before it did."""
    return {
        "kind": "outcome",
        "invocation_id": invocation_id,
        "success": False,
        "completed_at": completed_at,
        "error_code": "Interrupted",
        "error_message": "the module stopped before this invocation ended; whether the function ran is unknown",
    }


def _complete_interrupted(folder: JournalFolder) -> None:
    """Append an Interrupted outcome for every start in the folder that has none."""
    open_ids: dict[str, None] = {}
    for entry in _entries(folder):
        if entry.get("kind") == "start":
            open_ids[entry["invocation_id"]] = None
        elif entry.get("kind") == "outcome":
            open_ids.pop(entry.get("invocation_id", ""), None)
    if not open_ids:
        return
    number = folder.segments[-1].number + 1 if folder.segments else 1
    path = folder.path / f"{number:010d}{_SUFFIX}"
    now = _utc_now_text()
    lines = b"".join(
        (json.dumps(interrupted_outcome(invocation_id, now), separators=(",", ":")) + "\n").encode()
        for invocation_id in open_ids
    )
    with open(path, "ab") as file:
        file.write(lines)
        file.flush()
        os.fdatasync(file.fileno())
    folder.segments.append(Segment(number=number, path=path, size=len(lines)))
    logger.warning(
        "%d invocations in %s were cut short by the end of their process: recorded as interrupted",
        len(open_ids),
        folder.path,
    )


def _entries(folder: JournalFolder) -> Iterator[Entry]:
    for segment in folder.segments:
        with open(segment.path, "rb") as file:
            for raw in file:
                if raw.endswith(b"\n"):
                    with contextlib.suppress(ValueError):
                        yield json.loads(raw)


def _sync_and_close_retired(fds: list[int]) -> None:
    current, *retired = fds
    os.fdatasync(current)
    for fd in retired:
        os.fdatasync(fd)
        os.close(fd)


def _whole_entries_size(path: Path) -> int:
    """The file's size after cutting a torn last line (a write the end of its process interrupted)."""
    data = path.read_bytes()
    whole = data.rfind(b"\n") + 1
    if whole < len(data):
        with open(path, "r+b") as file:
            file.truncate(whole)
        logger.warning("%s ended in a torn entry (%d bytes), cut off", path, len(data) - whole)
    return whole


def _utc_now_text() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).replace(tzinfo=None).isoformat()
