"""Three replicas of the module behind HAProxy, sharing one PostgreSQL database: the scale-out test (`make scale-test`).

    .venv/bin/python bench/scale_out.py [--database-url postgresql://postgres@127.0.0.1:5432/postgres]
                                        [--seconds 6] [--callers 4] [--shutdown-delay 2] [--json PATH]

On one machine: the embedded Lambda runtime (one, shared), three instances of `python app.py` (their own ports and
journals, one MODULE_SECRET_KEY, one database of this run's own made beside --database-url's and dropped at the
end), and HAProxy balancing REST (HTTP/1.1) and gRPC (HTTP/2 end to end), its configuration written to the scratch
folder. A refused connection or an empty answer from a stopping instance is retried on another (`retry-on`,
`option redispatch`); health is checked every 500 ms.

Health checks. REST: GET /health, expecting 200 (an instance answers 503 `draining` from SIGTERM on). gRPC: a real
grpc.health.v1.Health/Check of `lambda_action.LambdaAction` on the gRPC port. HAProxy 2.6's HTTP checks cannot send
it: the request body must be the 5-byte gRPC frame header plus the message, and `http-check send body` is cut at the
first NUL byte while `body-lf "%[bin(...)]"` sends an empty body (tried: content-length 0, and the server waits for
a message that never comes). So the check is a `tcp-check` that speaks HTTP/2 itself: the connection preface, one
HEADERS frame, one DATA frame holding the request, then two expectations on the answer: that a HealthCheckResponse
came at all, and that it says SERVING (conclusively, so NOT_SERVING fails the check at once rather than by timeout).

Phases, each --seconds long, load through the balancer over both transports at once (--callers gRPC callers on
InvokeFunction, --callers REST callers on POST /api/v1/invoke), with a token minted on the first instance directly:
1. three instances; 2. one instance (the others disabled through HAProxy's runtime API), for calls/s of each;
3. three instances, one of them stopped with SIGTERM a third of the way in; the load goes on until a second after
   it has exited.

Then every call is accounted for: answered (its invocation id has exactly one row, completed, and no other row ran
the same call), or refused by design with a clear code (gRPC UNAVAILABLE or HTTP 503 from the balancer or a closing
server, or the module's own 429/409 codes). Also: each instance served calls in phases 1 and 3, HAProxy took the
stopped instance out before it exited, it exited 0, and every invocation left in its journal folder is in the table.
Prints a summary and exits 0 when all of that holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import aiohttp  # noqa: E402
import grpc  # noqa: E402
import psycopg2  # noqa: E402
from database_outage import _wait_drained  # noqa: E402
from gateway_compare.children import Child, child_environment, free_ports, spawn, wait_for_http  # noqa: E402
from gateway_compare.servers import ECHO, module_environment, write_functions  # noqa: E402
from psycopg2 import sql  # noqa: E402

from local_lambda import RuntimeProcess  # noqa: E402
from proto import lambda_action_pb2 as pb  # noqa: E402
from proto import lambda_action_pb2_grpc as pb_grpc  # noqa: E402

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
CLIENT_ID = "scale-test"
INSTANCES = 3
GRACE_SECONDS = 10
# Long enough for HAProxy's checks (every 0.5 s, two failures) to take a stopping instance out before it refuses
# calls: what Kubernetes' preStop pause does in deploy/kubernetes. --shutdown-delay 0 tries the harsher case.
SHUTDOWN_DELAY_SECONDS = 2.0
CALL_TIMEOUT_SECONDS = 30.0
# gRPC trailing metadata the module sets on its errors (grpc_api/errors.py).
ERROR_CODE_KEY = "lambda-action-error-code"
INVOCATION_ID_KEY = "lambda-action-invocation-id"
# The module's codes a caller may get by design under load or while an instance stops: each says what it is.
REFUSAL_CODES = {"ConcurrencyLimitReached", "Busy", "Throttled", "OutcomeUnknown"}
# HealthCheckResponse as gRPC messages (not compressed, 2 bytes: field 1, varint): any status, and SERVING.
ANY_STATUS_MESSAGE_REGEX = "0000000002080[0-9]"
SERVING_MESSAGE_HEX = "00000000020801"


class ScaleTestError(RuntimeError):
    """The test could not run (a child did not start, HAProxy never saw the instances up)."""


@dataclass
class Instance:
    number: int
    child: Child
    rest_port: int
    grpc_port: int
    spool: Path

    @property
    def name(self) -> str:
        return f"m{self.number}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"


@dataclass
class Call:
    """One call a caller made: its tag (in the payload, so its rows can be found), and how it ended."""

    tag: str
    transport: str
    # answered, refused (by design, with a clear code), failed (a code, but not one expected here), lost (no code)
    outcome: str
    kind: str = ""
    detail: str = ""
    invocation_id: str = ""


@dataclass
class Phase:
    name: str
    calls: list[Call] = field(default_factory=list)
    seconds: float = 0.0
    # Requests HAProxy sent to each server during the phase, per backend ("rest/m0": 120, ...).
    requests_per_server: dict[str, int] = field(default_factory=dict)

    def with_outcome(self, outcome: str) -> list[Call]:
        return [call for call in self.calls if call.outcome == outcome]

    @property
    def calls_per_second(self) -> float:
        return len(self.with_outcome("answered")) / self.seconds if self.seconds else 0.0


@dataclass
class StopReport:
    """What happened to the instance stopped with SIGTERM, in seconds from the signal."""

    shutdown_delay: float
    exit_code: int | None = None
    exited_after: float | None = None
    # When HAProxy first saw it as not UP, per backend.
    out_of_rotation_after: dict[str, float] = field(default_factory=dict)


class Balancer:
    """HAProxy as a child, and its runtime API (`show stat`, `disable server`) on a loopback port."""

    def __init__(self, child: Child, admin_port: int, rest_port: int, grpc_port: int) -> None:
        self.child = child
        self.admin_port = admin_port
        self.rest_url = f"http://127.0.0.1:{rest_port}"
        self.grpc_target = f"127.0.0.1:{grpc_port}"

    def command(self, command: str) -> str:
        with socket.create_connection(("127.0.0.1", self.admin_port), timeout=5) as connection:
            connection.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := connection.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def servers(self) -> list[dict[str, str]]:
        """`show stat` rows of the instances (not the frontends' and backends' totals)."""
        lines = [line for line in self.command("show stat").splitlines() if line]
        names = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(names, line.split(","), strict=False)) for line in lines[1:]]
        return [row for row in rows if row["svname"] not in ("FRONTEND", "BACKEND")]

    def requests_per_server(self) -> Counter[str]:
        return Counter({f"{row['pxname']}/{row['svname']}": int(row["req_tot"] or 0) for row in self.servers()})

    def retries(self) -> dict[str, int]:
        """Requests HAProxy retried (on any server) and redispatched (to another one), all backends."""
        rows = self.servers()
        return {
            "retried": sum(int(row["wretr"] or 0) for row in rows),
            "redispatched": sum(int(row["wredis"] or 0) for row in rows),
        }

    def wait_all_up(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.child.running:
                raise ScaleTestError(f"haproxy ended:\n{self.child.log_tail()}")
            try:
                up = [row for row in self.servers() if row["status"] == "UP"]
            except OSError:
                up = []
            if len(up) == count:
                return
            time.sleep(0.1)
        raise ScaleTestError(f"HAProxy does not see every instance up:\n{self.command('show stat')}")

    def set_enabled(self, instances: list[Instance], enabled: bool) -> None:
        verb = "enable" if enabled else "disable"
        for instance in instances:
            for backend in ("rest", "grpc"):
                answer = self.command(f"{verb} server {backend}/{instance.name}").strip()
                if answer:
                    raise ScaleTestError(f"HAProxy refused to {verb} {backend}/{instance.name}: {answer}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--database-url",
        default=DEFAULT_ADMIN_URL,
        help="a PostgreSQL database to connect to; the test makes (then drops) one of its own beside it",
    )
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each load phase")
    parser.add_argument("--callers", type=int, default=4, help="callers per transport")
    parser.add_argument(
        "--shutdown-delay",
        type=float,
        default=SHUTDOWN_DELAY_SECONDS,
        help="the instances' SHUTDOWN_DELAY_SECONDS: with 0 the stopped instance refuses calls at once",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    arguments = parser.parse_args()
    # Debian installs it in /usr/sbin, which a user's PATH may lack.
    haproxy = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    if haproxy is None:
        print("scale-out test: FAILED: HAProxy is not installed: apt-get install haproxy (or make system-packages)")
        return 1
    # A run stopped by SIGTERM (a CI timeout) cleans up as one stopped by Ctrl-C: children, database, scratch.
    signal.signal(signal.SIGTERM, _interrupt)
    admin_url = arguments.database_url
    database = _database_name(admin_url)
    try:
        _admin(admin_url, _drop(database), sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    except psycopg2.Error as error:
        print(f"scale-out test: FAILED: cannot create a database beside {admin_url}: {str(error).strip()}")
        return 1
    database_url = urllib.parse.urlunsplit(urllib.parse.urlsplit(admin_url)._replace(path=f"/{database}"))
    scratch = Path(tempfile.mkdtemp(prefix="scale-test-"))
    started = time.monotonic()
    try:
        figures, problems = _run(arguments, haproxy, scratch, database_url)
    except (ScaleTestError, OSError, psycopg2.Error) as error:
        print(f"scale-out test: FAILED: {error}")
        return 1
    except KeyboardInterrupt:
        print("scale-out test: interrupted; every child stopped, the database dropped, the scratch folder removed")
        return 130
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            _admin(admin_url, _drop(database))
        except psycopg2.Error as error:
            print(f"could not drop the test's database {database}: {str(error).strip()}")
    figures["seconds_taken"] = round(time.monotonic() - started, 1)
    if arguments.json:
        arguments.json.write_text(json.dumps(figures, indent=2) + "\n")
    _report(figures, problems)
    return 1 if problems else 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _run(
    arguments: argparse.Namespace, haproxy: str, scratch: Path, database_url: str
) -> tuple[dict[str, Any], list[str]]:
    """Start everything, run the phases, stop everything; the figures and what did not hold."""
    runtime: RuntimeProcess | None = None
    instances: list[Instance] = []
    balancer: Balancer | None = None
    try:
        functions = scratch / "functions"
        write_functions(functions, concurrency=64)
        runtime = RuntimeProcess.start(functions, "127.0.0.1", 0, "us-east-1", 15.0, "WARNING")
        client_secret = os.urandom(18).hex()
        secret_key = os.urandom(48).hex()
        for number in range(INSTANCES):
            instances.append(
                _start_instance(
                    scratch,
                    number,
                    runtime.endpoint_url,
                    database_url,
                    secret_key,
                    client_secret,
                    arguments.shutdown_delay,
                )
            )
        for instance in instances:
            wait_for_http(instance.child, f"{instance.rest_url}/health")
        balancer = _start_balancer(haproxy, scratch, instances)
        balancer.wait_all_up(2 * INSTANCES)
        # Minted by the first instance, used through the balancer on every one: they share MODULE_SECRET_KEY.
        token = _post(
            f"{instances[0].rest_url}/api/v1/token", {"client_id": CLIENT_ID, "client_secret": client_secret}
        )["token"]
        load = _Load(balancer, token, arguments.callers, arguments.shutdown_delay)

        # Unmeasured: connections open and the runtime's workers start before any phase is timed.
        warm_up = asyncio.run(load.run(Phase("warm-up"), 1.0))
        three = asyncio.run(load.run(Phase("three instances"), arguments.seconds))
        balancer.set_enabled(instances[1:], enabled=False)
        one = asyncio.run(load.run(Phase("one instance"), arguments.seconds))
        balancer.set_enabled(instances[1:], enabled=True)
        balancer.wait_all_up(2 * INSTANCES)
        stopped = instances[-1]
        stop = StopReport(arguments.shutdown_delay)
        stopping = asyncio.run(load.run(Phase("one stopped"), arguments.seconds, (stopped, stop)))
        retries = balancer.retries()
        journaled = _journal_entries(stopped.spool)
        drained = {instance.name: _wait_drained(instance.rest_port, 30.0) for instance in instances[:-1]}
        rows = _rows(database_url)
        duplicates = _duplicate_ids(database_url)
    finally:
        if balancer is not None:
            balancer.child.stop()
        _stop_all([instance.child for instance in instances], arguments.shutdown_delay + GRACE_SECONDS + 10)
        if runtime is not None:
            runtime.stop()
    others_exit_codes = {instance.name: instance.child.process.returncode for instance in instances[:-1]}
    return _account(
        [warm_up, three, one, stopping],
        rows,
        duplicates,
        journaled,
        stop,
        drained,
        others_exit_codes,
        retries,
        instances,
    )


def _start_instance(
    scratch: Path,
    number: int,
    lambda_url: str,
    database_url: str,
    secret_key: str,
    client_secret: str,
    shutdown_delay: float,
) -> Instance:
    rest_port, grpc_port = free_ports(2)
    spool = scratch / f"spool-{number}"
    env = module_environment(
        rest_port=rest_port,
        grpc_port=grpc_port,
        lambda_url=lambda_url,
        database_url=database_url,
        secret_key=secret_key,
        client_id=CLIENT_ID,
        client_secret=client_secret,
        log_dir=scratch / f"logs-{number}",
        spool_dir=spool,
        SHUTDOWN_GRACE_SECONDS=str(GRACE_SECONDS),
        SHUTDOWN_DELAY_SECONDS=f"{shutdown_delay:g}",
    )
    child = spawn(
        f"module-{number}", [sys.executable, "app.py"], cwd=ROOT, env=env, log_path=scratch / f"module-{number}.log"
    )
    return Instance(number, child, rest_port, grpc_port, spool)


def _start_balancer(haproxy: str, scratch: Path, instances: list[Instance]) -> Balancer:
    rest_port, grpc_port, admin_port = free_ports(3)
    config = scratch / "haproxy.cfg"
    config.write_text(_haproxy_config(rest_port, grpc_port, admin_port, instances))
    child = spawn(
        "haproxy",
        [haproxy, "-f", str(config), "-db"],
        cwd=scratch,
        env=child_environment({}),
        log_path=scratch / "haproxy.log",
    )
    return Balancer(child, admin_port, rest_port, grpc_port)


def grpc_health_check_bytes(authority: str) -> str:
    """The client side of one HTTP/2 exchange, as hex: the preface, an empty SETTINGS frame, the HEADERS of a POST to
    grpc.health.v1.Health/Check (HPACK literals, no Huffman coding), and a DATA frame that ends the stream, holding
    the gRPC message HealthCheckRequest{service: "lambda_action.LambdaAction"}."""

    def literal(name_index: int, value: bytes) -> bytes:
        # A literal header field without indexing, its name from the static table (RFC 7541, 6.2.2).
        head = bytes([name_index]) if name_index < 15 else bytes([0x0F, name_index - 15])
        return head + bytes([len(value)]) + value

    def new_name(name: bytes, value: bytes) -> bytes:
        return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value

    def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
        return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload

    headers = (
        b"\x83"  # :method POST (static table entry 3)
        + b"\x86"  # :scheme http (entry 6)
        + literal(4, b"/grpc.health.v1.Health/Check")  # :path
        + literal(1, authority.encode())  # :authority
        + literal(31, b"application/grpc")  # content-type
        + new_name(b"te", b"trailers")
    )
    service = b"lambda_action.LambdaAction"
    message = b"\x0a" + bytes([len(service)]) + service  # field 1, length-delimited
    grpc_message = b"\x00" + len(message).to_bytes(4, "big") + message
    exchange = (
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        + frame(0x4, 0x0, 0, b"")  # SETTINGS
        + frame(0x1, 0x4, 1, headers)  # HEADERS, END_HEADERS
        + frame(0x0, 0x1, 1, grpc_message)  # DATA, END_STREAM
    )
    return exchange.hex()


def _haproxy_config(rest_port: int, grpc_port: int, admin_port: int, instances: list[Instance]) -> str:
    rest_servers = "\n".join(f"  server {instance.name} 127.0.0.1:{instance.rest_port} check" for instance in instances)
    grpc_servers = "\n".join(
        f"  server {instance.name} 127.0.0.1:{instance.grpc_port} proto h2 check" for instance in instances
    )
    return f"""global
  maxconn 4096
  # On a port rather than a UNIX socket in the scratch folder: a socket's path may hold only 97 bytes, and TMPDIR
  # (a test's tmp_path, say) can be longer.
  stats socket ipv4@127.0.0.1:{admin_port} level admin
  log stderr format raw local0

defaults
  mode http
  log global
  option log-health-checks
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  # A connection an instance refuses (its servers have closed) or closes unanswered (it was idle when the instance
  # stopped) carried no call that ran: it is tried again, on another instance.
  option redispatch
  retries 3
  retry-on conn-failure empty-response
  default-server inter 500ms fall 2 rise 2

frontend rest
  bind 127.0.0.1:{rest_port}
  default_backend rest

frontend grpc
  bind 127.0.0.1:{grpc_port} proto h2
  default_backend grpc

backend rest
  balance roundrobin
  option httpchk GET /health
  http-check expect status 200
{rest_servers}

backend grpc
  balance roundrobin
  option tcp-check
  tcp-check connect
  tcp-check send-binary {grpc_health_check_bytes("lambda-action")}
  tcp-check expect rbinary {ANY_STATUS_MESSAGE_REGEX} comment "no HealthCheckResponse"
  # Conclusive on what has come: NOT_SERVING fails at once instead of waiting out the check's timeout.
  tcp-check expect min-recv 0 binary {SERVING_MESSAGE_HEX} comment "LambdaAction is not SERVING"
{grpc_servers}
"""


class _Load:
    """gRPC and REST callers through the balancer, each sending its next call once the last has ended."""

    def __init__(self, balancer: Balancer, token: str, callers: int, shutdown_delay: float) -> None:
        self.balancer = balancer
        self.callers = callers
        self.shutdown_delay = shutdown_delay
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._headers = {"Authorization": f"Bearer {token}"}
        self._end = 0.0

    async def run(self, phase: Phase, seconds: float, stopping: tuple[Instance, StopReport] | None = None) -> Phase:
        """The load for `seconds`; with `stopping`, that instance gets SIGTERM a third of the way in, and the load
        goes on until a second after it has exited."""
        before = self.balancer.requests_per_server()
        started = time.monotonic()
        self._end = started + seconds
        async with (
            grpc.aio.insecure_channel(self.balancer.grpc_target) as channel,
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.callers),
                timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT_SECONDS),
            ) as session,
        ):
            stub = pb_grpc.LambdaActionStub(channel)
            tasks = [
                *(self._grpc_caller(stub, phase, number) for number in range(self.callers)),
                *(self._rest_caller(session, phase, number) for number in range(self.callers)),
            ]
            if stopping is not None:
                tasks.append(self._stop(*stopping, seconds / 3))
            await asyncio.gather(*tasks)
        phase.seconds = time.monotonic() - started
        after = self.balancer.requests_per_server()
        phase.requests_per_server = {server: after[server] - before.get(server, 0) for server in sorted(after)}
        return phase

    async def _stop(self, instance: Instance, report: StopReport, after_seconds: float) -> None:
        await asyncio.sleep(after_seconds)
        process = instance.child.process
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        limit = signalled + self.shutdown_delay + GRACE_SECONDS + 10
        while process.poll() is None and time.monotonic() < limit:
            for row in self.balancer.servers():
                # "UP 1/2" is a server that failed one check and still takes calls; DOWN and MAINT take none.
                if row["svname"] == instance.name and not row["status"].startswith("UP"):
                    report.out_of_rotation_after.setdefault(row["pxname"], round(time.monotonic() - signalled, 2))
            self._end = max(self._end, time.monotonic() + 1.0)
            await asyncio.sleep(0.1)
        report.exit_code = process.poll()
        report.exited_after = round(time.monotonic() - signalled, 2)
        # A second more of load with the instance gone: HAProxy must route everything to the other two.
        self._end = max(self._end, time.monotonic() + 1.0)

    async def _grpc_caller(self, stub: pb_grpc.LambdaActionStub, phase: Phase, number: int) -> None:
        sequence = 0
        while time.monotonic() < self._end:
            sequence += 1
            tag = f"{phase.name}/grpc/{number}/{sequence}"
            request = pb.InvokeFunctionRequest(function_name=ECHO, payload=json.dumps({"call": tag}))
            try:
                reply = await stub.InvokeFunction(request, metadata=self._metadata, timeout=CALL_TIMEOUT_SECONDS)
            except grpc.aio.AioRpcError as error:
                phase.calls.append(_grpc_refusal(tag, error))
                await asyncio.sleep(0.05)
                continue
            if reply.success:
                phase.calls.append(Call(tag, "grpc", "answered", invocation_id=reply.invocation_id))
            else:
                phase.calls.append(Call(tag, "grpc", "failed", "function error", reply.payload[:160]))

    async def _rest_caller(self, session: aiohttp.ClientSession, phase: Phase, number: int) -> None:
        sequence = 0
        url = f"{self.balancer.rest_url}/api/v1/invoke"
        while time.monotonic() < self._end:
            sequence += 1
            tag = f"{phase.name}/rest/{number}/{sequence}"
            body = {"function_name": ECHO, "payload": {"call": tag}}
            try:
                async with session.post(url, json=body, headers=self._headers) as response:
                    status, text = response.status, await response.text()
            except (aiohttp.ClientError, TimeoutError) as error:
                phase.calls.append(Call(tag, "rest", "lost", f"REST {type(error).__name__}", str(error)[:160]))
                await asyncio.sleep(0.05)
                continue
            call = _rest_outcome(tag, status, text)
            phase.calls.append(call)
            if call.outcome != "answered":
                await asyncio.sleep(0.05)


def _grpc_refusal(tag: str, error: grpc.aio.AioRpcError) -> Call:
    status = error.code().name
    trailers = dict(error.trailing_metadata() or ())
    code = trailers.get(ERROR_CODE_KEY)
    details = (error.details() or "")[:160]
    if code:
        outcome = "refused" if code in REFUSAL_CODES else "failed"
        return Call(tag, "grpc", outcome, f"gRPC {status} {code}", details, str(trailers.get(INVOCATION_ID_KEY, "")))
    if status == "UNAVAILABLE":
        # A server that has stopped taking calls, or HAProxy with no server left (its 503 reads as UNAVAILABLE):
        # neither ran anything, and gRPC clients retry UNAVAILABLE.
        return Call(tag, "grpc", "refused", "gRPC UNAVAILABLE (no module code)", details)
    return Call(tag, "grpc", "lost", f"gRPC {status} (no module code)", details)


def _rest_outcome(tag: str, status: int, text: str) -> Call:
    try:
        answer = json.loads(text)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        if status == 503 and "No server is available" in text:
            return Call(tag, "rest", "refused", "REST 503 from HAProxy (no server)", text[:160])
        return Call(tag, "rest", "lost", f"REST {status} (no module code)", text[:160])
    if status == 200 and answer.get("success"):
        return Call(tag, "rest", "answered", invocation_id=str(answer.get("invocation_id", "")))
    code = answer.get("code")
    if status == 200 or not isinstance(code, str):
        return Call(tag, "rest", "failed", f"REST {status} (no module code)", text[:160])
    outcome = "refused" if code in REFUSAL_CODES else "failed"
    return Call(tag, "rest", outcome, f"REST {status} {code}", text[:160], str(answer.get("invocation_id") or ""))


@dataclass
class Row:
    tag: str
    completed: bool
    success: bool | None


def _rows(database_url: str) -> dict[str, Row]:
    """Every invocation record: invocation id -> the call it ran (its payload's tag) and how it ended."""
    rows: dict[str, Row] = {}
    connection = psycopg2.connect(database_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT invocation_id, payload, completed_at IS NOT NULL, success FROM lambda_invocations")
            for invocation_id, payload, completed, success in cursor.fetchall():
                rows[invocation_id] = Row(_tag(payload), completed, success)
    finally:
        connection.close()
    return rows


def _tag(payload: str | None) -> str:
    try:
        value = json.loads(payload or "")
    except ValueError:
        return ""
    return str(value.get("call", "")) if isinstance(value, dict) else ""


def _duplicate_ids(database_url: str) -> list[str]:
    """Invocation ids with more than one row (the column is unique: this checks that it is)."""
    connection = psycopg2.connect(database_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT invocation_id FROM lambda_invocations GROUP BY invocation_id HAVING count(*) > 1")
            return [row[0] for row in cursor.fetchall()]
    finally:
        connection.close()


def _journal_entries(spool: Path) -> dict[str, set[str]]:
    """Invocation id -> the kinds of entry (start, outcome) in the journal segments an instance left under its
    LOG_SPOOL_DIR (services/journal.py: <pid>-<ms>/<n>.journal, a segment deleted once all of it is shipped)."""
    found: dict[str, set[str]] = {}
    for segment in spool.glob("*/*.journal"):
        for line in segment.read_bytes().split(b"\n"):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and isinstance(entry.get("invocation_id"), str):
                found.setdefault(entry["invocation_id"], set()).add(str(entry.get("kind")))
    return found


def _account(
    phases: list[Phase],
    rows: dict[str, Row],
    duplicates: list[str],
    journaled: dict[str, set[str]],
    stop: StopReport,
    drained: dict[str, bool],
    others_exit_codes: dict[str, int | None],
    retries: dict[str, int],
    instances: list[Instance],
) -> tuple[dict[str, Any], list[str]]:
    """Every call against the table and the figures of the run; the figures, and what did not hold."""
    problems: list[str] = []
    calls = [call for phase in phases for call in phase.calls]
    by_tag: dict[str, list[str]] = {}
    for invocation_id, row in rows.items():
        by_tag.setdefault(row.tag, []).append(invocation_id)
    answered = [call for call in calls if call.outcome == "answered"]
    refused = [call for call in calls if call.outcome == "refused"]
    failed = [call for call in calls if call.outcome == "failed"]
    lost = [call for call in calls if call.outcome == "lost"]
    without_row = [call.tag for call in answered if call.invocation_id not in rows]
    not_completed = sorted(invocation_id for invocation_id, row in rows.items() if not row.completed)
    # One call, one invocation: the only row carrying an answered call's tag is the one its answer named.
    run_again = sorted(
        call.tag for call in answered if by_tag.get(call.tag, [call.invocation_id]) != [call.invocation_id]
    )
    # A refused call may be on record as refused, or once as an OutcomeUnknown (it may have run); never ran twice.
    refused_but_ran = sorted(
        call.tag
        for call in refused
        if len(by_tag.get(call.tag, [])) > 1
        or (
            "OutcomeUnknown" not in call.kind
            and any(rows[invocation_id].success for invocation_id in by_tag.get(call.tag, []))
        )
    )
    known_tags = {call.tag for call in calls}
    from_no_call = sorted(invocation_id for invocation_id, row in rows.items() if row.tag not in known_tags)
    unshipped = sorted(
        invocation_id for invocation_id in journaled if invocation_id not in rows or not rows[invocation_id].completed
    )
    left_running = sorted(invocation_id for invocation_id, kinds in journaled.items() if "outcome" not in kinds)

    for name, found in (
        ("calls lost without a clear code", [f"{call.kind}: {call.detail}" for call in lost]),
        ("calls failed with a code not expected here", [f"{call.kind}: {call.detail}" for call in failed]),
        ("answered calls without a row", without_row),
        ("rows never completed", not_completed),
        ("answered calls run or recorded more than once", run_again),
        ("refused calls that ran", refused_but_ran),
        ("rows from no call of this test", from_no_call),
        ("invocation ids with more than one row", duplicates),
        ("invocations of the stopped instance's journal not in the table", unshipped),
        ("invocations the stopped instance left running", left_running),
    ):
        if found:
            problems.append(f"{len(found)} {name}: {found[:5]}")

    three, one, stopping = (phase for phase in phases if phase.name != "warm-up")
    stopped = instances[-1].name
    for phase in (three, stopping):
        idle = [server for server, count in phase.requests_per_server.items() if count == 0]
        if idle:
            problems.append(f"{phase.name}: HAProxy sent no request to {idle}")
    served_by_others = {server: n for server, n in one.requests_per_server.items() if not server.endswith("/m0") and n}
    if served_by_others:
        problems.append(f"one instance: the disabled instances served {served_by_others}")
    if stop.exit_code != 0:
        problems.append(f"the stopped instance {stopped} exited with {stop.exit_code} (0 expected)")
    # With no shutdown delay the instance stops taking calls at once, and may be gone before two checks fail.
    for backend in ("rest", "grpc") if stop.shutdown_delay > 0 else ():
        taken_out = stop.out_of_rotation_after.get(backend)
        if taken_out is None or stop.exited_after is None or taken_out >= stop.exited_after:
            problems.append(f"HAProxy's {backend} health check did not take {stopped} out before it exited")
    if not all(drained.values()):
        problems.append(f"journals not shipped within 30 s: {drained}")
    bad_exits = {name: code for name, code in others_exit_codes.items() if code != 0}
    if bad_exits:
        problems.append(f"instances stopped at the end exited with {bad_exits}")

    figures: dict[str, Any] = {
        "answered": {
            "grpc": sum(1 for call in answered if call.transport == "grpc"),
            "rest": sum(1 for call in answered if call.transport == "rest"),
            "by_phase": {phase.name: len(phase.with_outcome("answered")) for phase in phases},
        },
        "refused_by_design": dict(Counter(call.kind for call in refused)),
        "refusals": [f"{call.tag} {call.kind}: {call.detail}" for call in refused[:20]],
        "failed": [f"{call.tag} {call.kind}: {call.detail}" for call in failed[:20]],
        "lost": [f"{call.tag} {call.kind}: {call.detail}" for call in lost[:20]],
        "rows": len(rows),
        "rows_not_completed": len(not_completed),
        "answered_without_row": len(without_row),
        "duplicate_invocation_ids": len(duplicates),
        "calls_run_or_recorded_twice": len(run_again) + len(refused_but_ran),
        "rows_from_no_call": len(from_no_call),
        "requests_per_server": {phase.name: phase.requests_per_server for phase in (three, one, stopping)},
        "haproxy_retries": retries,
        "calls_per_second": {
            "three_instances": round(three.calls_per_second, 1),
            "one_instance": round(one.calls_per_second, 1),
        },
        "stopped_instance": {
            "name": stopped,
            "exit_code": stop.exit_code,
            "shutdown_delay_s": stop.shutdown_delay,
            "exited_after_s": stop.exited_after,
            "out_of_rotation_after_s": stop.out_of_rotation_after,
            "invocations_left_in_journal": len(journaled),
            "of_which_not_in_table": len(unshipped),
        },
        "others_drained": drained,
        "others_exit_codes": others_exit_codes,
        "problems": problems,
    }
    return figures, problems


def _report(figures: dict[str, Any], problems: list[str]) -> None:
    answered = figures["answered"]
    print(f"answered: gRPC {answered['grpc']}, REST {answered['rest']}; by phase {answered['by_phase']}")
    refused = figures["refused_by_design"]
    print(f"refused by design: {refused or 'none'}")
    for line in figures["refusals"][:5]:
        print(f"  {line}")
    print(
        f"failed with another code: {len(figures['failed']) or 'none'}; "
        f"lost without a code: {len(figures['lost']) or 'none'}"
    )
    for line in (figures["failed"] + figures["lost"])[:5]:
        print(f"  {line}")
    print(
        f"rows: {figures['rows']} ({figures['rows_not_completed']} not completed); answered without a row: "
        f"{figures['answered_without_row']}; duplicate invocation ids: {figures['duplicate_invocation_ids']}; "
        f"calls run or recorded twice: {figures['calls_run_or_recorded_twice']}; rows from no call: "
        f"{figures['rows_from_no_call']}"
    )
    for phase, counts in figures["requests_per_server"].items():
        shares = ", ".join(f"{server} {count}" for server, count in counts.items())
        print(f"HAProxy requests per instance, {phase}: {shares}")
    retries = figures["haproxy_retries"]
    print(
        f"HAProxy retried {retries['retried']} requests on the same instance and redispatched "
        f"{retries['redispatched']} to another"
    )
    rate = figures["calls_per_second"]
    print(f"calls/s through HAProxy: three instances {rate['three_instances']}, one instance {rate['one_instance']}")
    print("  (one 2-core machine runs the callers, HAProxy, the runtime and every instance: this shows correctness,")
    print("   not speed-up; on separate hosts each replica adds its own capacity)")
    stopped = figures["stopped_instance"]
    taken_out = ", ".join(
        f"{backend} {after} s" for backend, after in sorted(stopped["out_of_rotation_after_s"].items())
    )
    print(
        f"stopped instance {stopped['name']}: SIGTERM (shutdown delay {stopped['shutdown_delay_s']:g} s); "
        f"out of HAProxy's rotation after {taken_out or 'never'}; "
        f"exited {stopped['exit_code']} after {stopped['exited_after_s']} s; {stopped['invocations_left_in_journal']} "
        f"invocations left in its journal, {stopped['of_which_not_in_table']} of them not in the table"
    )
    print(f"the others: journals shipped {figures['others_drained']}, exit codes {figures['others_exit_codes']}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    verdict = "FAILED" if problems else "passed"
    print(f"scale-out test: {verdict} in {figures['seconds_taken']} s")


def _stop_all(children: list[Child], timeout: float) -> None:
    """SIGTERM to all at once (each serves on for its shutdown delay), then wait; SIGKILL what outlasts `timeout`."""
    for child in children:
        if child.running:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.load(response)
        return answer


def _database_name(admin_url: str) -> str:
    """The test's own database: named after the admin URL's, so runs against different servers' databases (CI's,
    a developer's) never take each other's."""
    admin_database = urllib.parse.urlsplit(admin_url).path.lstrip("/") or "postgres"
    return f"lambda_action_scale_test_{admin_database}"[:63]


def _drop(database: str) -> sql.Composed:
    return sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))


def _admin(url: str, *statements: sql.Composable) -> None:
    connection = psycopg2.connect(url)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
    finally:
        connection.close()


if __name__ == "__main__":
    sys.exit(main())
