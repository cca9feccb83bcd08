"""The record floor: the minimal gateway plus the module's record path, and nothing else, done cheaply.

    PYTHONPATH=bench:. python -m gateway_compare.record_floor --endpoint-url URL --port N --journal FILE
        --database-url URL [--threads 64] [--zeroed-mb 64] [--no-fdatasync]

What a gateway of this design cannot do without, to keep the module's promises, on top of the minimal gateway:
- the start of every invocation written to a local journal before Lambda is called (a SIGKILL leaves it behind),
  in a file of zeros written at start-up;
- the outcome durable before the caller is answered: one fdatasync for all the outcomes that wait for it, made by
  the thread that brought the first of them, which settles every caller it covers with one wake of the loop;
- the invocations shipped to the database in batches through PyDAL, a few times a second, on a thread of their own;
- Lambda's log tail asked for (every invocation's record keeps it), and the event loop the module runs on (uvloop).

Nothing else: no authentication, no validation, no metrics, no idempotency, no trace, no cap, one journal file
that is never trimmed, entries shipped from memory rather than read back. It answers what the minimal gateway
answers plus the invocation's id, request id, duration and log tail. `bench/floor_compare.py` runs it beside the
minimal gateway and the module: how far its record path alone puts it below the minimal gateway is a floor under
what the module, which does all of that and more, can reach. `--no-fdatasync` leaves the outcome undurable, to show
what the fdatasync costs. It stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import uvloop
from pydal import DAL, Field

from gateway_compare.boto import plain_lambda_client
from gateway_compare.minimal_gateway import serve_until_stopped
from proto import lambda_action_pb2 as pb
from proto import lambda_action_pb2_grpc as pb_grpc

SHIP_INTERVAL_SECONDS = 0.2
# The journal's zero-filled length unless told: past it, the file grows entry by entry.
ZEROED_MB = 64
_COLUMNS = (
    "invocation_id",
    "function_name",
    "payload",
    "started_at",
    "completed_at",
    "success",
    "status_code",
    "response_payload",
    "duration_ms",
    "request_id",
    "log_tail",
)

Settle = tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], Any]


class FloorJournal:
    """One append-only file: starts written at once, outcomes written and made durable in groups."""

    def __init__(self, path: str, *, fdatasync: bool = True, zeroed_bytes: int = ZEROED_MB << 20) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        # Zeros written and made durable up front: an fdatasync of entries written over them flushes their data and
        # nothing else (no file size, no extent to convert), the cheapest durability this file system gives.
        chunk = bytes(1024 * 1024)
        for offset in range(0, zeroed_bytes, len(chunk)):
            os.pwrite(self._fd, chunk, offset)
        os.fsync(self._fd)
        self._end = 0
        self._fdatasync = fdatasync
        self._lock = threading.Lock()
        self._pending: list[bytes] = []
        self._waiting: list[Settle] = []
        self._syncing = False
        self._unshipped: list[tuple[Any, ...]] = []

    def start(self, line: bytes) -> None:
        """Write a start, after the outcomes waiting for the next fdatasync (the file keeps the order of events)."""
        with self._lock:
            if self._pending:
                line = b"".join(self._pending) + line
                self._pending.clear()
            self._write(line)

    def _write(self, data: bytes) -> None:
        os.pwrite(self._fd, data, self._end)
        self._end += len(data)

    def outcome(self, line: bytes, row: tuple[Any, ...], settle: Settle) -> None:
        """Have `settle`'s future answered once `line` is durable; the first thread to come makes the fdatasync."""
        with self._lock:
            self._pending.append(line)
            self._unshipped.append(row)
            self._waiting.append(settle)
            if self._syncing:
                return
            self._syncing = True
        while True:
            with self._lock:
                waiting, self._waiting = self._waiting, []
                if not waiting:
                    self._syncing = False
                    return
                if self._pending:
                    self._write(b"".join(self._pending))
                    self._pending.clear()
            if self._fdatasync:
                os.fdatasync(self._fd)
            loops: dict[asyncio.AbstractEventLoop, list[Settle]] = {}
            for item in waiting:
                loops.setdefault(item[0], []).append(item)
            for loop, settled in loops.items():
                loop.call_soon_threadsafe(_answer_all, settled)

    def take_unshipped(self) -> list[tuple[Any, ...]]:
        with self._lock:
            rows, self._unshipped = self._unshipped, []
        return rows


def _answer_all(settled: list[Settle]) -> None:
    for _, future, value in settled:
        if not future.done():
            if isinstance(value, BaseException):
                future.set_exception(value)
            else:
                future.set_result(value)


def open_table(database_url: str, folder: str) -> DAL:
    """The floor's table through PyDAL (made if missing; its table files in `folder`): before the server starts, so
    that a database it cannot use stops it at once."""
    # PyDAL names PostgreSQL's scheme postgres://.
    db = DAL(database_url.replace("postgresql://", "postgres://", 1), folder=folder, migrate_enabled=True)
    db.define_table(
        "floor_invocations",
        Field("invocation_id", length=64, unique=True),
        Field("function_name", length=170),
        Field("payload", "text"),
        Field("started_at", "double"),
        Field("completed_at", "double"),
        Field("success", "boolean"),
        Field("status_code", "integer"),
        Field("response_payload", "text"),
        Field("duration_ms", "double"),
        Field("request_id", length=64),
        Field("log_tail", "text"),
    )
    db.commit()
    return db


def ship(journal: FloorJournal, db: DAL, stop: threading.Event) -> None:
    """Every SHIP_INTERVAL_SECONDS, what the journal took meanwhile, as one multi-row INSERT through PyDAL, until
    `stop`, and then the rest."""
    table = db.floor_invocations
    marker = "?" if db._adapter.dbengine == "sqlite" else "%s"
    row_markers = "(" + ",".join([marker] * len(_COLUMNS)) + ")"
    while True:
        stopping = stop.wait(SHIP_INTERVAL_SECONDS)
        rows = journal.take_unshipped()
        if rows:
            db.executesql(
                f"INSERT INTO {table._rname} ({','.join(_COLUMNS)}) VALUES {','.join([row_markers] * len(rows))} "
                "ON CONFLICT (invocation_id) DO NOTHING;",
                placeholders=[value for row in rows for value in row],
            )
            db.commit()
        if stopping:  # what was answered before the stop is shipped first
            return


class RecordFloorGateway(pb_grpc.LambdaActionServicer):
    """InvokeFunction on a worker thread, recorded; answered by the group fdatasync that makes its outcome durable."""

    def __init__(self, client: Any, executor: ThreadPoolExecutor, journal: FloorJournal) -> None:
        self._client = client
        self._executor = executor
        self._journal = journal

    async def InvokeFunction(
        self, request: pb.InvokeFunctionRequest, context: grpc.aio.ServicerContext
    ) -> pb.InvokeFunctionResponse:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[pb.InvokeFunctionResponse] = loop.create_future()
        self._executor.submit(self._invoke, request, loop, answer)
        return await answer

    def _invoke(
        self, request: pb.InvokeFunctionRequest, loop: asyncio.AbstractEventLoop, answer: asyncio.Future[Any]
    ) -> None:
        try:
            invocation_id = uuid.uuid4().hex
            started = time.time()
            payload = request.payload or "{}"
            start = {"kind": "start", "invocation_id": invocation_id, "function_name": request.function_name}
            self._journal.start(_line({**start, "started_at": started, "payload": payload}))
            response = self._client.invoke(FunctionName=request.function_name, Payload=payload.encode(), LogType="Tail")
            body = response["Payload"].read().decode()
        except Exception as error:
            loop.call_soon_threadsafe(_answer_all, [(loop, answer, error)])
            return
        completed = time.time()
        function_error = response.get("FunctionError", "")
        log_tail = response.get("LogResult", "")
        request_id = response["ResponseMetadata"].get("RequestId", "")
        duration_ms = (completed - started) * 1000
        outcome = {
            "kind": "outcome",
            "invocation_id": invocation_id,
            "success": not function_error,
            "status_code": response["StatusCode"],
            "response_payload": body,
            "completed_at": completed,
            "duration_ms": duration_ms,
            "request_id": request_id,
            "log_tail": log_tail,
        }
        # PyDAL keeps a boolean as 'T' or 'F'.
        success = "F" if function_error else "T"
        row: tuple[Any, ...] = (invocation_id, request.function_name, payload, started, completed, success)
        row += (response["StatusCode"], body, duration_ms, request_id, log_tail)
        reply = pb.InvokeFunctionResponse(
            success=not function_error,
            status_code=response["StatusCode"],
            payload=body,
            function_error=function_error,
            executed_version=response.get("ExecutedVersion", ""),
            log_result=log_tail,
            invocation_id=invocation_id,
            request_id=request_id,
            duration_ms=duration_ms,
        )
        self._journal.outcome(_line(outcome), row, (loop, answer, reply))


def _line(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, separators=(",", ":")).encode() + b"\n"


async def serve(arguments: argparse.Namespace, db: DAL) -> None:
    """Serve on 127.0.0.1:`port` until SIGTERM or SIGINT; the shipper stops after the server."""
    journal = FloorJournal(arguments.journal, fdatasync=arguments.fdatasync, zeroed_bytes=arguments.zeroed_mb << 20)
    stop_shipping = threading.Event()
    shipper = threading.Thread(target=ship, args=(journal, db, stop_shipping), name="shipper")
    shipper.start()
    try:
        with ThreadPoolExecutor(max_workers=arguments.threads, thread_name_prefix="lambda") as executor:
            client = plain_lambda_client(arguments.endpoint_url, arguments.threads)
            await serve_until_stopped(RecordFloorGateway(client, executor, journal), arguments.port)
    finally:
        stop_shipping.set()
        shipper.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--endpoint-url", required=True, help="the Lambda endpoint, e.g. http://127.0.0.1:9001")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--journal", required=True, help="the journal file (appended to)")
    parser.add_argument("--database-url", required=True, help="where invocations are shipped (PyDAL's URL)")
    parser.add_argument("--threads", type=int, default=64, help="executor threads and pooled connections")
    parser.add_argument("--zeroed-mb", type=int, default=ZEROED_MB, help="the journal's zero-filled length, in MiB")
    parser.add_argument("--no-fdatasync", dest="fdatasync", action="store_false", help="outcomes left undurable")
    arguments = parser.parse_args()
    db = open_table(arguments.database_url, os.path.dirname(os.path.abspath(arguments.journal)))
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve(arguments, db))
    finally:
        # PyDAL closes a DAL on the thread that opened it; the shipper has ended by now.
        db.close()


if __name__ == "__main__":
    main()
