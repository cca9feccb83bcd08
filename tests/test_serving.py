"""`python app.py` as operators run it: both servers in one process, graceful shutdown, and WORKERS processes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import serving
from app import build_services
from proto import lambda_action_pb2 as pb
from proto import lambda_action_pb2_grpc as pb_grpc
from services.domain import Caller, InvokeRequest
from serving import check_ports_free, embedded_runtime
from tests.conftest import TEST_CLIENT_ID, TEST_CLIENT_SECRET, TEST_SECRET_KEY, SettingsFactory, free_port
from tests.fake_lambda import FakeLambda
from tests.metrics_text import sample_value

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0


@dataclass
class RunningModule:
    process: subprocess.Popen
    rest_port: int
    grpc_port: int
    database: Path
    output: list[str]
    # Copies the module's output (its workers' too) into `output` until every process holding the pipe has ended.
    reader: threading.Thread

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def token(self) -> str:
        body = json.dumps({"client_id": TEST_CLIENT_ID, "client_secret": TEST_CLIENT_SECRET}).encode()
        request = urllib.request.Request(
            f"{self.rest_url}/api/v1/token", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)["token"]

    def invoke_echo(self, token: str, event: dict) -> pb.InvokeFunctionResponse:
        """InvokeFunction of waddlebot-echo on a new channel: a new connection, which may reach any worker."""
        with grpc.insecure_channel(self.grpc_target) as channel:
            return pb_grpc.LambdaActionStub(channel).InvokeFunction(
                pb.InvokeFunctionRequest(function_name="waddlebot-echo", payload=json.dumps(event)),
                metadata=[("authorization", f"Bearer {token}")],
                timeout=10,
            )

    def grpc_invokers(self) -> set[int]:
        """The pids that audited a gRPC invocation."""
        return {int(pid) for pid in re.findall(r"\[(\d+)\] lambda_action\.audit: INVOKE .*transport=grpc", self.text())}

    def serving_pids(self) -> set[int]:
        """The pids that logged they serve both APIs (each worker, or the only process)."""
        return {int(pid) for pid in re.findall(r"\[(\d+)\] serving: \S+ \S+ serving: REST on", self.text())}

    def runtime_pids(self) -> list[tuple[int, int]]:
        """(starting process, runtime) pids of each embedded runtime started, in order."""
        found = re.findall(r"\[(\d+)\] local_lambda\.process: local Lambda runtime \(pid (\d+)\)", self.text())
        return [(int(starter), int(runtime)) for starter, runtime in found]

    def stop(self) -> int:
        """SIGTERM, then the exit status once the module has ended and all it wrote has been read."""
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        self.reader.join(timeout=10)
        return code

    def text(self) -> str:
        return "".join(self.output)


def _rest_health(url: str) -> int:
    """The status /health answers, 0 when nothing answers."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def _grpc_serving(target: str) -> bool:
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="lambda_action.LambdaAction"), timeout=2
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
def fake() -> Iterator[FakeLambda]:
    with FakeLambda() as running:
        yield running


@pytest.fixture
def start_module(tmp_path: Path, fake: FakeLambda) -> Iterator:
    """Start `python app.py` against the fake Lambda; stopped (killed if need be) at the end of the test."""
    started: list[RunningModule] = []

    def start(**overrides: str) -> RunningModule:
        rest_port, grpc_port = free_port(), free_port()
        database = tmp_path / "module.sqlite"
        environment = {
            **os.environ,
            "MODULE_SECRET_KEY": TEST_SECRET_KEY,
            "BOOTSTRAP_CLIENT_ID": TEST_CLIENT_ID,
            "BOOTSTRAP_CLIENT_SECRET": TEST_CLIENT_SECRET,
            "DATABASE_URL": f"sqlite:///{database}",
            "LOG_DIR": str(tmp_path / "logs"),
            "LOG_SPOOL_DIR": str(tmp_path / "spool"),
            "HOST": "127.0.0.1",
            "REST_PORT": str(rest_port),
            "GRPC_PORT": str(grpc_port),
            "AWS_ENDPOINT_URL_LAMBDA": fake.url,
            "LAMBDA_BACKEND": "aws",
            "SHUTDOWN_GRACE_SECONDS": "20",
            **overrides,
        }
        process = subprocess.Popen(
            [sys.executable, "app.py"],
            cwd=ROOT,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # Its own process group, which its workers share even once orphaned: see _end_everything.
            start_new_session=True,
        )
        output: list[str] = []
        reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
        reader.start()
        module = RunningModule(process, rest_port, grpc_port, database, output, reader)
        started.append(module)
        deadline = time.monotonic() + START_TIMEOUT
        # Ready means every process serves: with WORKERS, a call must be able to reach any of them.
        processes = int(environment.get("WORKERS", "1"))
        while not (
            len(module.serving_pids()) >= processes
            and _rest_health(module.rest_url) == 200
            and _grpc_serving(module.grpc_target)
        ):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait()
                pytest.fail(f"the module did not start serving:\n{module.text()}")
            time.sleep(0.1)
        return module

    yield start
    for module in started:
        _end_everything(module)


def _end_everything(module: RunningModule) -> None:
    """Kill whatever the test left running: a failed test may leave the parent, workers, or the runtime."""
    parent = module.process
    leftovers: set[int] = set()
    if parent.poll() is None:  # not reaped yet, so its pid and its children are still the module's
        leftovers.update(_descendants(parent.pid))
    # Workers whose parent was killed are orphans, no longer below it, but they stay in its process group;
    # the runtime leads a session of its own and is found from the log.
    leftovers.update(pid for pid in _group_members(parent.pid) if _is_the_modules(pid))
    for _, runtime in module.runtime_pids():
        if _is_the_modules(runtime):
            leftovers.update((runtime, *_descendants(runtime)))
    if parent.poll() is None:
        parent.kill()
        parent.wait()
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _group_members(pgid: int) -> set[int]:
    """The processes in process group `pgid`, found by walking /proc."""
    members = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # after the command: state, ppid, pgrp
            members.add(int(entry.name))
    return members


def _is_the_modules(pid: int) -> bool:
    """Whether `pid` runs app.py or the local runtime (a pid seen earlier may have been reused since)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"app.py" in command or b"local_lambda" in command


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`, children first found first."""
    found: list[int] = []
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            children = _children(current)
        except (FileNotFoundError, ProcessLookupError):
            continue
        found.extend(children)
        pending.extend(children)
    return found


def _invocation_rows(database: Path) -> list[tuple]:
    """The invocation log as SQLite holds it (PyDAL stores booleans as "T" and "F")."""
    with sqlite3.connect(database) as connection:
        return connection.execute(
            "SELECT invocation_id, transport, success, status_code, response_payload FROM lambda_invocations"
        ).fetchall()


def test_one_process_serves_rest_and_grpc_with_one_service(start_module, fake: FakeLambda):
    fake.add_function("waddlebot-echo")
    module = start_module()
    token = module.token()
    with grpc.insecure_channel(module.grpc_target) as channel:
        reply = pb_grpc.LambdaActionStub(channel).InvokeFunction(
            pb.InvokeFunctionRequest(function_name="waddlebot-echo", payload='{"via": "grpc"}', token=token),
            timeout=10,
        )
    assert reply.success
    assert json.loads(reply.payload) == {"via": "grpc"}
    request = urllib.request.Request(
        f"{module.rest_url}/api/v1/invoke",
        data=json.dumps({"function_name": "waddlebot-echo", "payload": {"via": "rest"}}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.load(response)["payload"] == {"via": "rest"}
    assert module.stop() == 0
    transports = sorted(row[1] for row in _invocation_rows(module.database))
    assert transports == ["grpc", "rest"]
    # One process: both servers logged from the same pid, and nothing went wrong on the way out.
    assert len(set(re.findall(r"INFO \[(\d+)\]", module.text()))) == 1
    # What start-up built was frozen out of garbage collection once both servers listened.
    frozen = re.search(r"(\d+) objects of start-up kept out of garbage collection", module.text())
    assert frozen is not None
    assert int(frozen.group(1)) > 10_000
    assert "Traceback" not in module.text()


def _call_slow_function(module: RunningModule, token: str, replies: dict[str, object]) -> list[threading.Thread]:
    """One gRPC and one REST call of waddlebot-slow, each on a started thread; each puts its reply (a reply, a
    gRPC error, or an HTTP status and body) in `replies` under "grpc" or "rest"."""

    def grpc_call() -> None:
        with grpc.insecure_channel(module.grpc_target) as channel:
            try:
                replies["grpc"] = pb_grpc.LambdaActionStub(channel).InvokeFunction(
                    pb.InvokeFunctionRequest(function_name="waddlebot-slow", payload='{"n": 1}', token=token),
                    timeout=30,
                )
            except grpc.RpcError as error:
                replies["grpc"] = error

    def rest_call() -> None:
        request = urllib.request.Request(
            f"{module.rest_url}/api/v1/invoke",
            data=json.dumps({"function_name": "waddlebot-slow", "payload": {"n": 2}}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                replies["rest"] = (response.status, json.load(response))
        except urllib.error.HTTPError as error:
            replies["rest"] = (error.code, json.load(error))
        except OSError as error:
            replies["rest"] = error

    callers = [threading.Thread(target=grpc_call), threading.Thread(target=rest_call)]
    for caller in callers:
        caller.start()
    return callers


def test_with_a_shutdown_delay_health_turns_first_while_calls_are_still_served(start_module, fake: FakeLambda):
    fake.add_function("waddlebot-echo")
    module = start_module(SHUTDOWN_DELAY_SECONDS="3")
    token = module.token()
    assert _rest_health(module.rest_url) == 200
    module.process.send_signal(signal.SIGTERM)

    deadline = time.monotonic() + 2
    while _grpc_serving(module.grpc_target) or _rest_health(module.rest_url) != 503:
        assert time.monotonic() < deadline, "health did not turn after SIGTERM"
        time.sleep(0.05)
    # A balancer has not caught up yet: a call it still sends is answered, over both transports.
    assert module.invoke_echo(token, {"late": True}).success
    late = urllib.request.Request(
        f"{module.rest_url}/api/v1/invoke",
        data=json.dumps({"function_name": "waddlebot-echo"}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(late, timeout=10) as response:
        assert response.status == 200
    with urllib.request.urlopen(f"{module.rest_url}/health/live", timeout=2) as response:
        assert response.status == 200
    assert module.stop() == 0, module.text()
    assert len(_invocation_rows(module.database)) == 2


def test_sigterm_lets_calls_in_flight_finish_and_refuses_new_ones(start_module, fake: FakeLambda):
    release = threading.Event()
    fake.add_function("waddlebot-slow", hold=release)
    fake.add_function("waddlebot-echo")
    module = start_module()
    token = module.token()
    replies: dict[str, object] = {}
    callers = _call_slow_function(module, token, replies)
    fake.wait_until_active(2)
    module.process.send_signal(signal.SIGTERM)

    # Draining: health says NOT_SERVING (or the port is already closed) and new calls are refused.
    deadline = time.monotonic() + 10
    while _grpc_serving(module.grpc_target):
        assert time.monotonic() < deadline, "gRPC health still SERVING after SIGTERM"
        time.sleep(0.05)
    with grpc.insecure_channel(module.grpc_target) as channel, pytest.raises(grpc.RpcError) as refused:
        pb_grpc.LambdaActionStub(channel).InvokeFunction(
            pb.InvokeFunctionRequest(function_name="waddlebot-echo", token=token), timeout=5
        )
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert module.process.poll() is None, "the module exited before its calls in flight finished"

    release.set()
    for caller in callers:
        caller.join(timeout=30)
    grpc_reply = replies["grpc"]
    assert isinstance(grpc_reply, pb.InvokeFunctionResponse), grpc_reply
    assert grpc_reply.success
    assert json.loads(grpc_reply.payload) == {"n": 1}
    status, body = replies["rest"]
    assert status == 200
    assert body["payload"] == {"n": 2}
    assert module.process.wait(timeout=30) == 0, module.text()
    rows = _invocation_rows(module.database)
    assert sorted((row[1], row[2], row[3]) for row in rows) == [("grpc", "T", 200), ("rest", "T", 200)]


def test_calls_still_running_when_the_grace_ends_get_outcome_unknown_not_a_retryable_error(
    start_module, fake: FakeLambda
):
    release = threading.Event()
    fake.add_function("waddlebot-slow", hold=release)
    module = start_module(SHUTDOWN_GRACE_SECONDS="3")
    token = module.token()
    replies: dict[str, object] = {}
    callers = _call_slow_function(module, token, replies)
    fake.wait_until_active(2)
    module.process.send_signal(signal.SIGTERM)
    for caller in callers:
        caller.join(timeout=30)
    # Both answered before the servers cut what was left; only then does the function finish.
    release.set()

    grpc_reply = replies["grpc"]
    assert isinstance(grpc_reply, grpc.RpcError), grpc_reply
    assert grpc_reply.code() == grpc.StatusCode.ABORTED, grpc_reply
    trailers = dict(grpc_reply.trailing_metadata() or ())
    assert trailers["lambda-action-error-code"] == "OutcomeUnknown"
    assert "do not run it again" in (grpc_reply.details() or "")
    status, body = replies["rest"]
    assert status == 409, body
    assert body["code"] == "OutcomeUnknown"
    assert module.process.wait(timeout=30) == 0, module.text()
    assert "Traceback" not in module.text()
    # The invocations ran on to their end and are on record, under the ids the callers were given.
    rows = {row[0]: row for row in _invocation_rows(module.database)}
    assert set(rows) == {trailers["lambda-action-invocation-id"], body["invocation_id"]}
    assert sorted((row[1], row[2]) for row in rows.values()) == [("grpc", "T"), ("rest", "T")]


def test_two_workers_share_both_ports_and_stop_together(start_module, fake: FakeLambda):
    fake.add_function("waddlebot-echo")
    module = start_module(WORKERS="2")
    token = module.token()
    for number in range(24):
        reply = module.invoke_echo(token, {"n": number})
        assert reply.success
        assert json.loads(reply.payload) == {"n": number}
    assert module.stop() == 0, module.text()
    # Read once the module has ended, so that the last calls' audit lines are in.
    answering = module.grpc_invokers()
    assert len(answering) == 2, module.text()
    assert module.process.pid not in answering
    assert len(_invocation_rows(module.database)) == 24
    assert "Traceback" not in module.text()


def test_metrics_add_up_every_worker(start_module, fake: FakeLambda):
    fake.add_function("waddlebot-echo")
    module = start_module(WORKERS="2")
    token = module.token()
    for number in range(24):
        assert module.invoke_echo(token, {"n": number}).success

    # Each scrape is a new connection, which may reach either worker: every one sums both workers' counts.
    scraped = []
    for _ in range(6):
        with urllib.request.urlopen(f"{module.rest_url}/metrics", timeout=10) as response:
            scraped.append(response.read().decode())
    assert module.stop() == 0, module.text()

    assert len(module.grpc_invokers()) == 2, module.text()
    wanted = {"function_name": "waddlebot-echo", "invocation_type": "RequestResponse", "transport": "grpc"}
    for text in scraped:
        assert sample_value(text, "lambda_action_invocations_total", outcome="success", **wanted) == 24, text


def test_workers_share_one_embedded_runtime_started_by_the_parent(start_module):
    module = start_module(WORKERS="2", LAMBDA_BACKEND="local", LOCAL_LAMBDA_PORT="0")
    token = module.token()
    for number in range(16):
        reply = module.invoke_echo(token, {"n": number})
        assert reply.success
        assert json.loads(reply.payload) == {"n": number}
    [(starter, runtime_pid)] = module.runtime_pids()
    assert starter == module.process.pid
    assert module.stop() == 0, module.text()
    assert len(module.grpc_invokers()) == 2, module.text()
    with pytest.raises(ProcessLookupError):
        os.kill(runtime_pid, 0)


def _children(pid: int) -> set[int]:
    """The children of `pid`, whichever of its threads started them (the runtime is started off the loop)."""
    children = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a thread that just ended
            children.update(int(child) for child in (task / "children").read_text().split())
    return children


def _wait_gone(pids: set[int], seconds: float) -> set[int]:
    """The pids still running after up to `seconds`."""
    deadline = time.monotonic() + seconds
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        for pid in list(alive):
            try:
                os.kill(pid, 0)
                # A zombie (ended, not yet reaped by init) has ended too.
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    alive.discard(pid)
            except (ProcessLookupError, FileNotFoundError):
                alive.discard(pid)
        time.sleep(0.1)
    return alive


@pytest.mark.parametrize("backend", ["aws", "local"])
def test_workers_and_the_embedded_runtime_end_when_their_parent_is_killed(start_module, fake: FakeLambda, backend: str):
    fake.add_function("waddlebot-echo")
    module = start_module(WORKERS="2", LAMBDA_BACKEND=backend, LOCAL_LAMBDA_PORT="0")
    # One call first, so that with the local backend a function's worker runs under the runtime too.
    assert module.invoke_echo(module.token(), {"n": 1}).success
    workers = module.serving_pids()
    runtimes = {runtime for _, runtime in module.runtime_pids()}
    assert len(workers) == 2
    assert len(runtimes) == (1 if backend == "local" else 0)
    assert _children(module.process.pid) == workers | runtimes
    everything = set(_descendants(module.process.pid))

    module.process.kill()
    module.process.wait()

    # Nothing serves on without its parent: each worker (and the runtime) notices the closed pipe and stops.
    assert _wait_gone(everything, 15) == set(), module.text()
    module.reader.join(timeout=10)
    noticed = re.findall(r"\[(\d+)\] serving: the parent process is gone; stopping", module.text())
    assert {int(pid) for pid in noticed} == workers, module.text()


def test_the_parent_replaces_a_worker_that_dies(start_module, fake: FakeLambda):
    fake.add_function("waddlebot-echo")
    module = start_module(WORKERS="2")
    token = module.token()
    workers = _children(module.process.pid)
    assert len(workers) == 2
    # A worker that dies right after starting is taken for a broken configuration, not replaced: be older.
    time.sleep(serving.WORKER_MIN_UPTIME_SECONDS + 0.5)
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)

    deadline = time.monotonic() + 30
    while len(_children(module.process.pid) - {victim}) < 2:
        assert time.monotonic() < deadline, module.text()
        time.sleep(0.1)
    replacement = (_children(module.process.pid) - workers).pop()
    deadline = time.monotonic() + 30
    while f"[{replacement}] hypercorn.error: Running on" not in module.text():
        assert time.monotonic() < deadline, module.text()
        time.sleep(0.1)
    for number in range(8):
        assert module.invoke_echo(token, {"n": number}).success
    assert f"(pid {victim}) exited with -9; starting another" in module.text()
    assert module.stop() == 0, module.text()


def test_an_embedded_runtime_that_dies_is_started_again(start_module):
    module = start_module(LAMBDA_BACKEND="local", LOCAL_LAMBDA_PORT="0")
    token = module.token()
    [(_, first)] = module.runtime_pids()
    os.kill(first, signal.SIGKILL)

    deadline = time.monotonic() + 30
    while len(module.runtime_pids()) < 2:
        assert time.monotonic() < deadline, module.text()
        time.sleep(0.1)
    assert f"the local Lambda runtime (pid {first}) exited with -9; starting it again" in module.text()
    reply = module.invoke_echo(token, {"again": True})
    assert reply.success
    assert json.loads(reply.payload) == {"again": True}
    assert module.stop() == 0, module.text()


async def test_the_embedded_runtime_gets_its_own_settings_from_the_modules(
    make_settings: SettingsFactory, capfd: pytest.CaptureFixture[str]
):
    # As from `.env`: the module reads them, the runtime's process gets them in its environment.
    settings = make_settings(
        LAMBDA_BACKEND="local", LOCAL_LAMBDA_PORT="0", LOG_LEVEL="INFO", LOCAL_LAMBDA_MAX_CONCURRENCY="7"
    )
    async with embedded_runtime(settings):
        pass

    assert "at most 7 calls at once across unreserved functions" in capfd.readouterr().err


async def test_the_local_backend_starts_one_runtime_and_stops_it(make_settings: SettingsFactory):
    settings = make_settings(LAMBDA_BACKEND="local", LOCAL_LAMBDA_PORT="0")
    async with embedded_runtime(settings) as serving:
        assert serving.local_lambda_port != 0
        module = await build_services(serving)
        try:
            assert module.service.endpoint_url == f"http://127.0.0.1:{serving.local_lambda_port}"
            result = await module.service.invoke(
                InvokeRequest(function_name="waddlebot-echo", payload=b'{"via": "local"}'),
                Caller(kind="service", name="test"),
                "rest",
            )
            assert result.success
            assert result.payload == '{"via": "local"}'
            health = await module.service.health()
            assert health.lambda_backend["backend"] == "local"
        finally:
            await module.close()
    with socket.create_server(("127.0.0.1", serving.local_lambda_port)):
        pass  # the port is free again: the runtime stopped


async def test_a_local_runtime_that_cannot_listen_is_a_clear_start_up_error(make_settings: SettingsFactory):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        settings = make_settings(LAMBDA_BACKEND="local", LOCAL_LAMBDA_PORT=str(port))
        with pytest.raises(OSError, match="LOCAL_LAMBDA_PORT"):
            async with embedded_runtime(settings):
                pass


@pytest.mark.parametrize("variable", ["REST_PORT", "GRPC_PORT", "LOCAL_LAMBDA_PORT"])
def test_a_port_in_use_stops_start_up_naming_its_variable(make_settings: SettingsFactory, variable: str):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        # The other ports free ones, not the defaults: another test's module may have just left 8080 or 50060.
        ports = {name: str(free_port()) for name in ("REST_PORT", "GRPC_PORT", "LOCAL_LAMBDA_PORT")}
        settings = make_settings(HOST="127.0.0.1", LAMBDA_BACKEND="local", **{**ports, variable: str(port)})
        with pytest.raises(OSError, match=f"{variable}={port} cannot be used"):
            check_ports_free(settings)


def test_the_module_runs_on_uvloop_where_it_is_installed():
    pytest.importorskip("uvloop")

    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert serving.run_on_event_loop(loop_module()).startswith("uvloop")


def test_what_start_up_built_is_left_out_of_later_collections():
    built_at_start_up = {"clients": [object()]}
    try:
        assert serving.settle_start_up_objects() == gc.get_freeze_count() > 0
        assert not any(tracked is built_at_start_up for tracked in gc.get_objects())
    finally:
        gc.unfreeze()
    assert any(tracked is built_at_start_up for tracked in gc.get_objects())
