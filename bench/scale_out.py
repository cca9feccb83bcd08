"""Three replicas of the module behind HAProxy, sharing one PostgreSQL database: the scale-out test (`make scale-test`).

    .venv/bin/python bench/scale_out.py [--database-url postgresql://postgres@127.0.0.1:5432/postgres]

On one machine: the embedded Lambda runtime (one, shared), three instances of `python app.py` (their own ports and
journals, one database of this run's own, one MODULE_SECRET_KEY), and HAProxy balancing REST (HTTP/1.1) and gRPC
(HTTP/2 to the instances). HAProxy checks REST with GET /health, and gRPC with a real grpc.health.v1.Health/Check
for lambda_action.LambdaAction: HAProxy 2.6 cannot put a binary body in an HTTP check, so the check speaks HTTP/2
itself (tcp-check: the connection preface, one HEADERS frame, one DATA frame with the empty request) and passes
only when the answer holds the message `status: SERVING`.

1. Load through the balancer over both transports with three instances, then with one (the others disabled on
   HAProxy's runtime socket): calls/s of each. On a 2-core machine this shows the fleet works, not a speed-up.
2. Load with three, and SIGTERM one instance mid-run. A token minted through one instance is used on all of them.

Then every call is accounted for: answered (its invocation id recorded exactly once), or refused with a clear
code. The stopped instance exits 0 with its journal shipped. Exits 1 when anything does not hold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import aiohttp  # noqa: E402
import grpc  # noqa: E402
import psycopg2  # noqa: E402
from database_outage import _wait_drained  # noqa: E402
from gateway_compare.children import Child, child_environment, free_ports, spawn, wait_for_http  # noqa: E402
from gateway_compare.servers import DUMMY_AWS, ECHO, write_functions  # noqa: E402

from local_lambda import RuntimeProcess  # noqa: E402
from proto import lambda_action_pb2 as pb  # noqa: E402
from proto import lambda_action_pb2_grpc as pb_grpc  # noqa: E402

DATABASE = "lambda_action_scale_test"
CLIENT_ID = "scale-test"
INSTANCES = 3
GRACE_SECONDS = 10
SHUTDOWN_DELAY_SECONDS = 2.0
# Errors a caller may get by design while an instance stops or a balancer has no server: each says what it is.
CLEAR_GRPC_CODES = {"UNAVAILABLE", "RESOURCE_EXHAUSTED", "ABORTED"}
CLEAR_HTTP_STATUSES = {409, 429, 503}


@dataclass
class Instance:
    child: Child
    rest_port: int
    grpc_port: int
    spool: Path

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"


@dataclass
class Tally:
    """What the callers of one phase got."""

    answered: list[str] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    calls_by_transport: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def calls_per_second(self) -> float:
        return len(self.answered) / self.seconds if self.seconds else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each load phase")
    parser.add_argument("--callers", type=int, default=4, help="callers per transport")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    arguments = parser.parse_args()
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        print("HAProxy is not installed: apt-get install haproxy (Debian's package)")
        return 1
    admin_url = arguments.database_url
    database_url = re.sub(r"/[^/]*$", f"/{DATABASE}", admin_url)
    _admin(admin_url, f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)", f"CREATE DATABASE {DATABASE}")
    scratch = Path(tempfile.mkdtemp(prefix="scale-test-"))
    runtime: RuntimeProcess | None = None
    instances: list[Instance] = []
    balancer: Child | None = None
    try:
        functions = scratch / "functions"
        write_functions(functions, concurrency=64)
        runtime = RuntimeProcess.start(functions, "127.0.0.1", 0, "us-east-1", 15.0, "WARNING")
        client_secret = secrets.token_urlsafe(24)
        secret_key = secrets.token_urlsafe(48)
        instances = [
            _start_instance(scratch, number, runtime.endpoint_url, database_url, secret_key, client_secret)
            for number in range(INSTANCES)
        ]
        for instance in instances:
            wait_for_http(instance.child, f"{instance.rest_url}/health")
        rest_port, grpc_port = free_ports(2)
        socket_path = scratch / "haproxy.sock"
        config = scratch / "haproxy.cfg"
        config.write_text(_haproxy_config(rest_port, grpc_port, socket_path, instances))
        balancer = spawn(
            "haproxy", [haproxy, "-f", str(config), "-db"], cwd=scratch, env={}, log_path=scratch / "haproxy.log"
        )
        _wait_all_up(balancer, socket_path, INSTANCES)
        # Minted by the first instance, used through the balancer on every one: they share MODULE_SECRET_KEY.
        token = _post(
            f"{instances[0].rest_url}/api/v1/token", {"client_id": CLIENT_ID, "client_secret": client_secret}
        )["token"]
        rest_url, grpc_target = f"http://127.0.0.1:{rest_port}", f"127.0.0.1:{grpc_port}"

        three = asyncio.run(_load(rest_url, grpc_target, token, arguments.callers, arguments.seconds, "three"))
        for number in range(1, INSTANCES):
            _haproxy(socket_path, f"disable server rest_servers/m{number}", f"disable server grpc_servers/m{number}")
        one = asyncio.run(_load(rest_url, grpc_target, token, arguments.callers, arguments.seconds, "one"))
        for number in range(1, INSTANCES):
            _haproxy(socket_path, f"enable server rest_servers/m{number}", f"enable server grpc_servers/m{number}")
        _wait_all_up(balancer, socket_path, INSTANCES)
        before = _sessions_by_server(socket_path)

        stopped = instances[-1]
        exit_code: dict[str, int | None] = {}

        def stop_midway() -> None:
            time.sleep(arguments.seconds / 2)
            stopped.child.process.send_signal(15)
            exit_code["code"] = stopped.child.process.wait(GRACE_SECONDS + 30)

        stopper = threading.Thread(target=stop_midway)
        stopper.start()
        stop_run = asyncio.run(_load(rest_url, grpc_target, token, arguments.callers, arguments.seconds, "stop"))
        stopper.join()
        after = _sessions_by_server(socket_path)
        # Read at once, before anything else can ship for it: what its journal holds must be in the table already.
        journaled = _journaled_ids(stopped.spool)
        recorded_at_exit = set(_rows(database_url))
        left_in_journal = sorted(journaled - recorded_at_exit)
        shipped = all(_wait_drained(instance.rest_port, 30.0) for instance in instances[:-1])
        rows = _rows(database_url)
    finally:
        if balancer is not None:
            balancer.stop()
        for instance in instances:
            instance.child.stop(GRACE_SECONDS + 10)
        if runtime is not None:
            runtime.stop()
        shutil.rmtree(scratch, ignore_errors=True)
        _admin(admin_url, f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")

    answered = three.answered + one.answered + stop_run.answered
    # The unique invocation id is the table's key: a row cannot be doubled, but a call could run twice (two ids,
    # one payload) if anything between the caller and Lambda sent it again.
    missing = [invocation_id for invocation_id in answered if invocation_id not in rows]
    doubled = len(answered) - len(set(answered))
    runs = Counter(rows.values())
    run_twice = sorted(call for call, count in runs.items() if count > 1)
    recorded_unanswered = sorted(rows[invocation_id] for invocation_id in set(rows) - set(answered))
    share = {server: after.get(server, 0) - before.get(server, 0) for server in sorted(after)}
    figures = {
        "calls_per_second": {
            "three_instances": round(three.calls_per_second, 1),
            "one_instance": round(one.calls_per_second, 1),
        },
        "answered": {
            "three": len(three.answered),
            "one": len(one.answered),
            "with_one_stopped": len(stop_run.answered),
        },
        "by_transport": dict(three.calls_by_transport + one.calls_by_transport + stop_run.calls_by_transport),
        "refused_by_design": dict(three.refused + one.refused + stop_run.refused),
        "refusals": (three.refusals + one.refusals + stop_run.refusals)[:10],
        "lost": three.lost + one.lost + stop_run.lost,
        "rows": len(rows),
        "missing_rows": len(missing),
        "doubled_rows": doubled,
        "run_twice": run_twice,
        "recorded_unanswered": recorded_unanswered,
        "sessions_per_server_while_stopping": share,
        "stopped_instance_exit_code": exit_code.get("code"),
        "stopped_instance_journaled_ids": len(journaled),
        "stopped_instance_unshipped_at_exit": left_in_journal,
        "others_drained": shipped,
    }
    _report(figures)
    if arguments.json:
        arguments.json.write_text(json.dumps(figures, indent=2))
    ok = (
        not figures["lost"]
        and not missing
        and not doubled
        and not run_twice
        and exit_code.get("code") == 0
        and not left_in_journal
        and shipped
        and len(recorded_unanswered) <= sum((three.refused + one.refused + stop_run.refused).values())
        and all(share.get(f"m{number}", 0) > 0 for number in range(INSTANCES))
    )
    print("scale-out test: " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


def _start_instance(
    scratch: Path, number: int, lambda_url: str, database_url: str, secret_key: str, client_secret: str
) -> Instance:
    rest_port, grpc_port = free_ports(2)
    spool = scratch / f"spool-{number}"
    env = child_environment(
        {
            **DUMMY_AWS,
            "ENVIRONMENT": "production",
            "HOST": "127.0.0.1",
            "REST_PORT": str(rest_port),
            "GRPC_PORT": str(grpc_port),
            "LAMBDA_BACKEND": "aws",
            "AWS_ENDPOINT_URL_LAMBDA": lambda_url,
            "MODULE_SECRET_KEY": secret_key,
            "BOOTSTRAP_CLIENT_ID": CLIENT_ID,
            "BOOTSTRAP_CLIENT_SECRET": client_secret,
            "DATABASE_URL": database_url,
            "LOG_LEVEL": "WARNING",
            "LOG_DIR": str(scratch / f"logs-{number}"),
            "LOG_SPOOL_DIR": str(spool),
            "SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
            # Long enough for HAProxy's checks (every 0.5 s, two failures) to take a stopping instance out before it
            # refuses calls: what Kubernetes' preStop pause does in deploy/kubernetes.
            "SHUTDOWN_DELAY_SECONDS": str(SHUTDOWN_DELAY_SECONDS),
        }
    )
    child = spawn(
        f"module-{number}", [sys.executable, "app.py"], cwd=ROOT, env=env, log_path=scratch / f"module-{number}.log"
    )
    return Instance(child, rest_port, grpc_port, spool)


def grpc_health_check_bytes(authority: str) -> str:
    """A whole HTTP/2 exchange's client side, as hex: the preface, an empty SETTINGS frame, the HEADERS of a
    POST to grpc.health.v1.Health/Check (HPACK literals, no Huffman), and a DATA frame holding the gRPC message
    HealthCheckRequest{service: "lambda_action.LambdaAction"}, ending the stream."""

    def literal(name_index: int, value: bytes) -> bytes:
        # "Literal header field without indexing, indexed name" (RFC 7541 6.2.2), 4-bit name index.
        head = bytes([name_index]) if name_index < 15 else bytes([0x0F, name_index - 15])
        return head + bytes([len(value)]) + value

    def new_name(name: bytes, value: bytes) -> bytes:
        return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value

    def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
        return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload

    headers = (
        b"\x83"  # :method POST (static 3)
        + b"\x86"  # :scheme http (static 6)
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


# HealthCheckResponse{status: SERVING} as a gRPC message: not compressed, 2 bytes, field 1 = 1.
SERVING_MESSAGE_HEX = "00000000020801"


def _haproxy_config(rest_port: int, grpc_port: int, socket_path: Path, instances: list[Instance]) -> str:
    rest_servers = "\n".join(
        f"  server m{number} 127.0.0.1:{instance.rest_port} check" for number, instance in enumerate(instances)
    )
    grpc_servers = "\n".join(
        f"  server m{number} 127.0.0.1:{instance.grpc_port} proto h2 check" for number, instance in enumerate(instances)
    )
    return f"""global
  maxconn 4096
  stats socket {socket_path} mode 600 level admin

defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  # A connection an instance refuses (it is stopping) is tried on another: it took no request.
  option redispatch
  retries 3
  retry-on conn-failure empty-response
  default-server inter 500ms fall 2 rise 2

frontend rest
  bind 127.0.0.1:{rest_port}
  default_backend rest_servers

frontend grpc
  bind 127.0.0.1:{grpc_port} proto h2
  default_backend grpc_servers

backend rest_servers
  balance roundrobin
  option httpchk GET /health
  http-check expect status 200
{rest_servers}

backend grpc_servers
  balance roundrobin
  option tcp-check
  tcp-check connect
  tcp-check send-binary {grpc_health_check_bytes("lambda-action")}
  tcp-check expect binary {SERVING_MESSAGE_HEX}
{grpc_servers}
"""


def _haproxy(socket_path: Path, *commands: str) -> str:
    answers = []
    for command in commands:
        with socket.socket(socket.AF_UNIX) as connection:
            connection.connect(str(socket_path))
            connection.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := connection.recv(65536):
                chunks.append(chunk)
        answers.append(b"".join(chunks).decode())
    return "\n".join(answers)


def _servers(socket_path: Path) -> list[dict[str, str]]:
    text = _haproxy(socket_path, "show stat")
    lines = [line for line in text.splitlines() if line]
    names = lines[0].lstrip("# ").split(",")
    return [dict(zip(names, line.split(","), strict=False)) for line in lines[1:]]


def _wait_all_up(balancer: Child, socket_path: Path, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not balancer.running:
            raise RuntimeError(f"haproxy ended:\n{balancer.log_tail()}")
        try:
            up = [row for row in _servers(socket_path) if row["svname"].startswith("m") and row["status"] == "UP"]
        except OSError:
            up = []
        if len(up) == 2 * count:
            return
        time.sleep(0.2)
    raise RuntimeError(f"HAProxy does not see every instance up:\n{_haproxy(socket_path, 'show stat')}")


def _sessions_by_server(socket_path: Path) -> dict[str, int]:
    totals: Counter[str] = Counter()
    for row in _servers(socket_path):
        if row["svname"].startswith("m"):
            totals[row["svname"]] += int(row["stot"] or 0)
    return dict(totals)


async def _load(rest_url: str, grpc_target: str, token: str, callers: int, seconds: float, phase: str) -> Tally:
    tally = Tally()
    end = time.monotonic() + seconds
    started = time.monotonic()
    metadata = [("authorization", f"Bearer {token}")]
    headers = {"Authorization": f"Bearer {token}"}

    async def grpc_caller(stub: pb_grpc.LambdaActionStub, number: int) -> None:
        call = 0
        while time.monotonic() < end:
            call += 1
            try:
                reply = await stub.InvokeFunction(
                    pb.InvokeFunctionRequest(
                        function_name=ECHO, payload=json.dumps({"call": f"{phase}/grpc/{number}/{call}"})
                    ),
                    metadata=metadata,
                    timeout=30,
                )
            except grpc.aio.AioRpcError as error:
                _refused_or_lost(
                    tally, f"grpc {error.code().name}", error.code().name in CLEAR_GRPC_CODES, error.details()
                )
                await asyncio.sleep(0.05)
                continue
            tally.answered.append(reply.invocation_id)
            tally.calls_by_transport["grpc"] += 1

    async def rest_caller(session: aiohttp.ClientSession, number: int) -> None:
        call = 0
        while time.monotonic() < end:
            call += 1
            body = {"function_name": ECHO, "payload": {"call": f"{phase}/rest/{number}/{call}"}}
            try:
                async with session.post(f"{rest_url}/api/v1/invoke", json=body, headers=headers) as response:
                    text = await response.text()
            except aiohttp.ClientError as error:
                _refused_or_lost(tally, "rest connection", False, str(error))
                continue
            if response.status == 200:
                tally.answered.append(json.loads(text)["invocation_id"])
                tally.calls_by_transport["rest"] += 1
                continue
            code = _module_code(text)
            clear = response.status in CLEAR_HTTP_STATUSES and (code is not None or "No server is available" in text)
            _refused_or_lost(tally, f"rest {response.status} {code or 'balancer'}", clear, text[:200])
            await asyncio.sleep(0.05)

    async with grpc.aio.insecure_channel(grpc_target) as channel, aiohttp.ClientSession() as session:
        stub = pb_grpc.LambdaActionStub(channel)
        await asyncio.gather(
            *(grpc_caller(stub, number) for number in range(callers)),
            *(rest_caller(session, number) for number in range(callers)),
        )
    tally.seconds = time.monotonic() - started
    return tally


def _refused_or_lost(tally: Tally, kind: str, clear: bool, details: str) -> None:
    if clear:
        tally.refused[kind] += 1
        tally.refusals.append(f"{kind}: {details[:160]}")
    else:
        tally.lost.append(f"{kind}: {details}")


def _module_code(text: str) -> str | None:
    try:
        body = json.loads(text)
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


def _journaled_ids(spool: Path) -> set[str]:
    """The invocation ids in the journal segments an instance left (it deletes a segment once all of it is
    shipped, so anything unshipped would be here)."""
    found = set()
    for segment in spool.rglob("*.journal"):
        for line in segment.read_bytes().split(b"\n"):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and isinstance(entry.get("invocation_id"), str):
                found.add(entry["invocation_id"])
    return found


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.load(response)
        return answer


def _rows(database_url: str) -> dict[str, str]:
    """The completed records: invocation id -> the call it ran (the payload's tag)."""
    connection = psycopg2.connect(database_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT invocation_id, payload FROM lambda_invocations WHERE completed_at IS NOT NULL")
            return {invocation_id: json.loads(payload).get("call", "") for invocation_id, payload in cursor.fetchall()}
    finally:
        connection.close()


def _admin(url: str, *statements: str) -> None:
    connection = psycopg2.connect(url)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
    finally:
        connection.close()


def _report(figures: dict[str, Any]) -> None:
    rate = figures["calls_per_second"]
    print(f"calls/s through HAProxy: three instances {rate['three_instances']}, one instance {rate['one_instance']}")
    print("  (one 2-core machine runs the load, HAProxy, the runtime and every instance: this shows correctness, not")
    print("   speed-up; on separate hosts the fleet adds each replica's capacity)")
    print(f"answered: {figures['answered']}, by transport {figures['by_transport']}")
    print(f"refused by design: {figures['refused_by_design'] or 'none'} {figures['refusals'][:3]}")
    print(f"lost: {len(figures['lost'])} {figures['lost'][:5]}")
    print(f"rows: {figures['rows']}; answered without a row: {figures['missing_rows']}")
    print(f"answers doubled: {figures['doubled_rows']}; calls run twice: {figures['run_twice'] or 'none'}")
    print(f"recorded but never answered: {figures['recorded_unanswered'] or 'none'}")
    print(f"HAProxy sessions per instance while one stopped: {figures['sessions_per_server_while_stopping']}")
    print(
        f"stopped instance: exit {figures['stopped_instance_exit_code']}; of the "
        f"{figures['stopped_instance_journaled_ids']} invocations in the journal it left, "
        f"{len(figures['stopped_instance_unshipped_at_exit'])} not in the table when it exited; "
        f"the others drained: {figures['others_drained']}"
    )


if __name__ == "__main__":
    sys.exit(main())
