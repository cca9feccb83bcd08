"""The invocation journal: a local, append-only record of every invocation, written before the database sees it.

A start entry is written before Lambda is called (a SIGKILL leaves it behind); an outcome entry is made durable
(fdatasync, one for all the calls that finish at about the same moment) before the caller gets its answer.
`services/shipper.py` copies entries to the database in batches and trims what it shipped.

On disk, under LOG_SPOOL_DIR:

    instance.lock           held by the process that owns the directory (the only process, or the WORKERS parent)
    <pid>-<ms>/lock         held by the process writing that folder: each process starts a folder of its own
    <pid>-<ms>/<n>.journal  segments of JSON lines, numbered in order

The segment being written is a file allocated SEGMENT_BYTES long up front; entries are written into it with pwrite,
and are in the kernel's page cache when that returns (a SIGKILL leaves them in the file). The thread that calls
Lambda writes the start right before the call. Right after it, the thread hands the outcome to the journal, which
keeps it until the next fdatasync: the caller's answer waits on the event loop for that fdatasync, which writes every
outcome handed over since the last one in one pwrite, makes it durable, and settles every answer waiting for it at
once (group commit). The thread that handed over an outcome when no fdatasync was under way makes it, and goes on
making them while more outcomes wait; the threads that come meanwhile leave their wait to it and go back to the
pool. No thread is woken to sync, and the loop is woken once per fdatasync, not once per call. A start written while
outcomes wait takes them along, ahead of it, so the file keeps the order of the journal's positions. An outcome is
in the file before its caller is answered; a SIGKILL before then leaves its invocation interrupted, as it would
have without the outcome. The unwritten rest of a segment reads as zero
bytes, which no entry holds (entries are ASCII JSON lines), so a reader knows where the entries end.

(Entries were once copied into a shared memory mapping of the segment, with no system call; but each fdatasync
write-protects the mapping's dirty pages in the view of every thread, and the next entry takes a fault to write
again. Side by side under load, pwrite gave 1 to 3% more calls/s.)

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
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
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
    # The file's length on disk: SEGMENT_BYTES (or one entry's size) for a segment this process writes.
    capacity: int = 0


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
        # Segments written to before the current one, with their descriptors, made durable (and then
        # closed) by the next group sync: outcomes written to them may still be waiting for it.
        self._retired: list[tuple[Segment, int]] = []
        # Bytes in every folder's segments that the database does not hold yet (kept, not summed, per call).
        self._unshipped = 0
        self._folder_changed = False
        # Guards the bookkeeping and the segment's end: entries are appended by the threads that call Lambda.
        self._lock = threading.Lock()
        # Held by the thread making an fdatasync; the others wait on it, then find themselves covered.
        self._sync_lock = threading.Lock()
        # Outcomes a loop waits to see durable (position, loop, what to call), and the thread that syncs for them:
        # one fdatasync and one wake of the loop for all that wait, however many, and no Lambda thread blocked.
        self._durable_waiters: list[tuple[int, asyncio.AbstractEventLoop, Callable[[OSError | None], None]]] = []
        self._waiters_lock = threading.Lock()
        # A thread is making an fdatasync for the waits: the others leave theirs to it.
        self._syncing = False
        # For journal writes of code on the event loop (refusals, failures): they too keep off the loop.
        self._io_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal-io")
        # Outcomes taken but not yet written (encoded line, invocation id), in order, and their bytes: written by
        # the next fdatasync, or ahead of the next start.
        self._pending: list[tuple[bytes, str]] = []
        self._pending_bytes = 0
        # The segment each running invocation's start is in, so its outcome (once written) can release it.
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
        self._unshipped = sum(folder.unshipped_bytes() for folder in self.folders)
        with self._lock:
            self._start_new_segment(SEGMENT_BYTES)

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

    def _start_new_segment(self, capacity: int) -> None:
        """Begin the next segment of this process's folder (under the lock)."""
        own = self.folders[0]
        number = own.segments[-1].number + 1 if own.segments else 1
        segment = Segment(number=number, path=own.path / f"{number:010d}{_SUFFIX}", capacity=capacity)
        fd = os.open(segment.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            # Blocks allocated now, not entry by entry: a full disk is an OSError here, when a segment begins (the
            # invocation falls back to writing its record directly), not in the middle of an entry.
            os.posix_fallocate(fd, 0, capacity)
        except BaseException:
            os.close(fd)
            raise
        if self._segment is not None:
            self._retired.append((self._segment, self._fd))
        self._fd = fd
        self._segment = segment
        own.segments.append(segment)
        # The folder's entry for the new file is made durable with the next group sync.
        self._folder_changed = True

    # -- writing -------------------------------------------------------------------------------------------

    def check_room(self) -> None:
        """JournalFull when the journal holds LOG_SPOOL_MAX_BYTES: a new invocation could not be recorded."""
        held = self._unshipped
        if held >= self.max_bytes:
            raise JournalFull(
                f"the invocation journal holds {held} bytes (LOG_SPOOL_MAX_BYTES={self.max_bytes}) that the "
                "database has not taken yet; invocations resume when it answers again: retry later"
            )

    def append_start(self, entry: Entry) -> None:
        """Write an invocation's start (before Lambda is called); it survives a SIGKILL from here on.

        From any thread; OSError when the journal cannot be written.
        """
        line = _encode(entry)
        with self._lock:
            # Outcomes waiting for the next fdatasync go first, in the same write: the file keeps the order of
            # the positions handed out.
            segment = self._append_pending(line)
            segment.open_starts += 1
            self._start_segment[entry["invocation_id"]] = segment

    def append_outcome_durable(self, entry: Entry) -> None:
        """Write an invocation's outcome and return once it is durable (one fdatasync for all the threads waiting).

        Blocking, from any thread; OSError when the outcome could not be written or made durable.
        """
        self._sync_to(self.append_outcome_later(entry))

    def append_outcome_later(self, entry: Entry) -> int:
        """Take an invocation's outcome, not yet written nor durable: the position to give `when_durable` before the
        caller gets its answer. The fdatasync that makes it durable writes it first.

        From any thread; OSError when the journal is closed.
        """
        line = _encode(entry)
        with self._lock:
            if self._closed:
                raise OSError("the invocation journal is closed")
            # Kept until the fdatasync that makes it durable writes it (or a start is written first): one write
            # for every outcome of a group commit, and no system call here, where the thread holds the GIL.
            self._pending.append((line, entry["invocation_id"]))
            self._pending_bytes += len(line)
            return self._written + self._pending_bytes

    def when_durable(
        self, position: int, loop: asyncio.AbstractEventLoop, then: Callable[[OSError | None], None]
    ) -> None:
        """From a thread that may block: have `loop` call `then(None)` once everything written up to `position` is
        durable, or `then(error)` when it cannot be made so.

        Group commit without a thread of its own: when no fdatasync is under way, the calling thread makes one for
        everything written so far, settles every wait it covers with one wake of each loop, and goes on syncing
        for the waits that came meanwhile; a call that finds an fdatasync under way leaves its wait to that
        thread and returns at once.
        """
        lead = False
        with self._waiters_lock:
            if self._closed:
                error: OSError | None = OSError("the invocation journal is closed")
            elif self._synced >= position:
                error = None
            else:
                self._durable_waiters.append((position, loop, then))
                if self._syncing:
                    return
                self._syncing = True
                lead = True
        if lead:
            self._sync_for_waiters()
            return
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
            loop.call_soon_threadsafe(then, error)

    def _sync_for_waiters(self) -> None:
        """The leading thread: make durable what the waiting outcomes need, then settle them; until none waits."""
        while True:
            with self._waiters_lock:
                waiters, self._durable_waiters = self._durable_waiters, []
                if not waiters:
                    self._syncing = False
                    return
            error: OSError | None = None
            try:
                self._sync_to(max(position for position, _, _ in waiters))
            except OSError as failure:
                error = failure
            by_loop: dict[asyncio.AbstractEventLoop, list[Callable[[OSError | None], None]]] = {}
            for _, waiting_loop, then in waiters:
                by_loop.setdefault(waiting_loop, []).append(then)
            for waiting_loop, settlements in by_loop.items():
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
                    waiting_loop.call_soon_threadsafe(_settle_all, settlements, error)

    async def append_outcome(self, entry: Entry) -> None:
        """`append_outcome_durable` for code on the event loop, run on the journal's own thread."""
        await asyncio.get_running_loop().run_in_executor(self._io_thread, self.append_outcome_durable, entry)

    async def append_whole(self, start: Entry, outcome: Entry) -> None:
        """Start and outcome of an invocation that never reached Lambda, durable on return (journal's own thread)."""

        def write_both() -> None:
            self.append_start(start)
            self.append_outcome_durable(outcome)

        await asyncio.get_running_loop().run_in_executor(self._io_thread, write_both)

    def _append_pending(self, line: bytes = b"") -> Segment:
        """Write the outcomes waiting to be written, then `line`, in one write (under the lock); the segment written.

        When the write fails, the outcomes stay waiting: the next write takes them again, in the same order.
        """
        if not self._pending:
            segment, _ = self._append(line) if line else (self._segment, self._written)
            assert segment is not None
            return segment
        segment, _ = self._append(b"".join(pending for pending, _ in self._pending) + line)
        for _, invocation_id in self._pending:
            started_in = self._start_segment.pop(invocation_id, None)
            if started_in is not None:
                started_in.open_starts -= 1
        self._pending.clear()
        self._pending_bytes = 0
        return segment

    def _append(self, line: bytes) -> tuple[Segment, int]:
        """Write one encoded entry at the segment's end (under the lock); its segment and the position just past it."""
        if self._closed:
            raise OSError("the invocation journal is closed")
        segment = self._segment
        assert segment is not None
        if segment.size + len(line) > segment.capacity:
            # An entry larger than a segment (a payload of megabytes) gets a segment of its own size.
            self._start_new_segment(max(SEGMENT_BYTES, len(line)))
            segment = self._segment
            assert segment is not None
        # Short only on a failing disk; the next entry is written over what part of this one got there.
        if os.pwrite(self._fd, line, segment.size) != len(line):
            raise OSError(f"the journal segment {segment.path} took only part of an entry")
        segment.size += len(line)
        self._written += len(line)
        self._unshipped += len(line)
        self._unshipped_times.append((segment.number, segment.size, time.time()))
        return segment, self._written

    def _sync_to(self, position: int) -> None:
        """Return once everything up to `position` is durable: one thread's fdatasync covers all who wait for it."""
        if self._synced >= position:
            return
        with self._sync_lock:
            if self._synced >= position:  # covered by the fdatasync of the thread this one waited for
                return
            with self._lock:
                if self._closed:
                    raise OSError("the invocation journal is closed")
                try:
                    self._append_pending()
                except OSError as error:
                    raise OSError(f"the invocation journal could not take outcomes: {error}") from error
                target = self._written
                retired, self._retired = self._retired, []
                folder = self.folders[0].path if self._folder_changed else None
                self._folder_changed = False
                current_fd = self._fd
            try:
                _sync_segments(current_fd, retired, folder)
            except OSError as error:
                raise OSError(f"the invocation journal could not be made durable: {error}") from error
            self._synced = target

    # -- the shipper's side -------------------------------------------------------------------------------

    def read_unshipped(self, max_entries: int) -> tuple[list[tuple[Segment, int, Entry]], list[str]]:
        """Up to `max_entries` complete entries not yet shipped, oldest first, each with its segment and end offset.

        Also the folders' problems worth a log line (a line that is not JSON is skipped, never shipped).
        Runs on the shipper's thread; it only reads files the loop appends to.
        """
        entries: list[tuple[Segment, int, Entry]] = []
        problems: list[str] = []
        with self._lock:
            # What is written by now; entries appended later wait for the next batch.
            ends = [(segment, segment.shipped, segment.size) for folder in self.folders for segment in folder.segments]
        for segment, shipped, size in ends:
            if len(entries) >= max_entries:
                return entries, problems
            if shipped >= size:
                continue
            with open(segment.path, "rb") as file:
                file.seek(shipped)
                data = file.read(size - shipped)
            offset = shipped
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
        with self._lock:
            for segment, offset, _ in shipped:
                if offset > segment.shipped:
                    self._unshipped -= offset - segment.shipped
                    segment.shipped = offset
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
        return self._unshipped

    def lag_seconds(self) -> float:
        """How long the oldest entry of this process not yet in the database has waited."""
        try:
            oldest = self._unshipped_times[0][2]
        except IndexError:  # none, or the shipper took the last one just now
            return 0.0
        return max(0.0, time.time() - oldest)

    def close(self) -> None:
        """Make everything durable and release the files (entries not shipped stay for the next start)."""
        with self._lock:
            if self._closed:
                return
            # Outcomes still waiting go to the file; if they cannot, their starts read as interrupted next time.
            with contextlib.suppress(OSError):
                self._append_pending()
            self._closed = True
        self._io_thread.shutdown(wait=True)
        with self._sync_lock, self._lock:  # after any fdatasync under way
            segments = [*self._retired, *([(self._segment, self._fd)] if self._fd >= 0 else [])]
            self._retired, self._fd = [], -1
        for segment, fd in segments:
            with contextlib.suppress(OSError, ValueError):
                os.fdatasync(fd)
                # The zero bytes past the entries are not needed once nobody writes the file.
                if segment is not None and segment.path.exists():
                    os.ftruncate(fd, segment.size)
                os.close(fd)
        for folder in self.folders:
            with contextlib.suppress(OSError):
                os.close(folder.lock_fd)


def _settle_all(settlements: list[Callable[[OSError | None], None]], error: OSError | None) -> None:
    """On a loop: each wait one fdatasync just settled, in one callback of the loop for all of them."""
    for then in settlements:
        try:
            then(error)
        except Exception:
            logger.exception("settling a durable outcome failed")


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


def _encode(entry: Entry) -> bytes:
    # ASCII with escapes: any text (a lone surrogate included) reads back exactly as it was written, and no entry
    # holds a zero byte.
    return (json.dumps(entry, separators=(",", ":")) + "\n").encode("ascii")


def _sync_segments(current_fd: int, retired: list[tuple[Segment, int]], folder: Path | None) -> None:
    """fdatasync the segment being written and those retired since the last sync (then closed), and the folder when
    a segment was created in it since."""
    os.fdatasync(current_fd)
    for segment, fd in retired:
        os.fdatasync(fd)
        with contextlib.suppress(OSError):  # the shipper may have deleted it already
            os.ftruncate(fd, segment.size)
        os.close(fd)
    if folder is not None:
        folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder_fd)
        finally:
            os.close(folder_fd)


def _whole_entries_size(path: Path) -> int:
    """The size of the file's whole entries; a torn last one (its process ended mid-write) and the unwritten zero
    bytes of a segment cut off."""
    data = path.read_bytes()
    unwritten = data.find(b"\0")
    written = data if unwritten < 0 else data[:unwritten]
    whole = written.rfind(b"\n") + 1
    if whole < len(data):
        with open(path, "r+b") as file:
            file.truncate(whole)
        if whole < len(written):
            logger.warning("%s ended in a torn entry (%d bytes), cut off", path, len(written) - whole)
    return whole


def _utc_now_text() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).replace(tzinfo=None).isoformat()
