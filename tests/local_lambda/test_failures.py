"""Handlers that fail (raise, time out, run out of memory, crash, cannot load) and what callers then get."""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from local_lambda import LocalLambdaRuntime
from tests.local_lambda.conftest import GATED, REGION, FunctionMaker, invoke_json, make_lambda_client, wait_for

PID_OR_CRASH = """
import os

def lambda_handler(event, context):
    if event.get("crash"):
        os._exit(1)
    return os.getpid()
"""


def test_a_raising_handler_answers_lambdas_error_object(make_function: FunctionMaker, lambda_client: Any) -> None:
    make_function(
        "raiser",
        """
        def parse(text):
            raise ValueError(f"cannot parse {text!r}")

        def lambda_handler(event, context):
            return parse(event["text"])
        """,
    )

    response, payload = invoke_json(lambda_client, "raiser", {"text": "!nope"}, LogType="Tail")

    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "ValueError"
    assert payload["errorMessage"] == "cannot parse '!nope'"
    assert payload["requestId"] == response["ResponseMetadata"]["RequestId"]
    trace = payload["stackTrace"]
    assert len(trace) == 2  # the handler's frames only, not the runtime's
    assert "handler.py" in trace[0]
    assert "in lambda_handler" in trace[0]
    assert "in parse" in trace[1]
    assert 'raise ValueError(f"cannot parse {text!r}")' in trace[1]
    assert "[ERROR] ValueError: cannot parse '!nope'" in _log(response)


def test_a_handler_past_its_timeout_is_stopped(
    make_function: FunctionMaker, lambda_client: Any, runtime: LocalLambdaRuntime
) -> None:
    make_function(
        "sleeper",
        """
        import os
        import time

        def lambda_handler(event, context):
            print("going to sleep")
            time.sleep(event.get("sleep", 0))
            return os.getpid()
        """,
        timeout=1,
    )
    _, first_pid = invoke_json(lambda_client, "sleeper")

    started = time.monotonic()
    response, payload = invoke_json(lambda_client, "sleeper", {"sleep": 30}, LogType="Tail")
    elapsed = time.monotonic() - started

    assert 1.0 <= elapsed < 5.0
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "Sandbox.Timedout"
    request_id = response["ResponseMetadata"]["RequestId"]
    assert payload["errorMessage"] == f"RequestId: {request_id} Error: Task timed out after 1.00 seconds"
    log = _log(response)
    assert "going to sleep" in log  # what it printed before the timeout
    assert "Task timed out after 1.00 seconds" in log
    # The stuck worker was killed, and the next call gets a fresh one.
    assert first_pid not in runtime.worker_pids("sleeper")
    _, next_pid = invoke_json(lambda_client, "sleeper")
    assert isinstance(next_pid, int)
    assert next_pid != first_pid


HUNGRY = """
import os
import threading

def lambda_handler(event, context):
    if "reserve_gb" in event:  # reserved, never touched: only the hard limit sees it
        reserved = bytearray(event["reserve_gb"] * 1024 ** 3)
        return {"reserved": len(reserved), "pid": os.getpid()}
    if "threads" in event:
        release = threading.Event()
        threads = [threading.Thread(target=release.wait) for _ in range(event["threads"])]
        for thread in threads:
            thread.start()
        release.set()
        return {"threads": len(threads), "pid": os.getpid()}
    chunks = [b"x" * (1024 * 1024) for _ in range(event["megabytes"])]  # written, so resident
    return {"allocated": len(chunks), "pid": os.getpid()}
"""


def test_a_handler_beyond_its_memory_size_gets_a_memory_error(make_function: FunctionMaker, lambda_client: Any) -> None:
    make_function("hungry", HUNGRY, memory_size=128)

    _, within = invoke_json(lambda_client, "hungry", {"megabytes": 64})
    response, payload = invoke_json(lambda_client, "hungry", {"megabytes": 512})
    _, after = invoke_json(lambda_client, "hungry", {"megabytes": 1})

    assert within["allocated"] == 64
    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "Runtime.OutOfMemory"
    assert payload["errorMessage"].endswith(" Error: Runtime exited with error: signal: killed")
    assert after["allocated"] == 1
    assert after["pid"] != within["pid"]  # a worker that ran out of memory is not reused


def test_a_worker_is_not_charged_for_the_size_of_the_process_that_started_it(
    make_function: FunctionMaker, functions_dir: Path
) -> None:
    # Linux carries a process's peak resident size over to the processes it starts; a worker measured that way
    # would inherit a large parent's peak and never notice its own overrun.
    ballast = bytearray(768 * 1024 * 1024)
    for offset in range(0, len(ballast), 4096):
        ballast[offset] = 1  # written, so resident
    make_function("hungry", HUNGRY, memory_size=128)
    with LocalLambdaRuntime(functions_dir, port=0, region=REGION).run_in_thread() as started_big:
        response, payload = invoke_json(make_lambda_client(started_big.endpoint_url), "hungry", {"megabytes": 512})
    del ballast

    assert response.get("FunctionError") == "Unhandled", payload
    assert payload["errorType"] == "Runtime.OutOfMemory"


def test_a_runaway_allocation_is_stopped_at_once(make_function: FunctionMaker, lambda_client: Any) -> None:
    make_function("hungry", HUNGRY, memory_size=128)

    response, payload = invoke_json(lambda_client, "hungry", {"reserve_gb": 2})
    _, after = invoke_json(lambda_client, "hungry", {"megabytes": 1})

    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "Runtime.OutOfMemory"
    assert after["allocated"] == 1


def test_threads_fit_in_a_small_memory_size(make_function: FunctionMaker, lambda_client: Any) -> None:
    make_function("hungry", HUNGRY, memory_size=128)

    response, payload = invoke_json(lambda_client, "hungry", {"threads": 40})

    assert "FunctionError" not in response, payload
    assert payload["threads"] == 40


def test_a_crashed_worker_is_replaced(
    make_function: FunctionMaker, lambda_client: Any, runtime: LocalLambdaRuntime
) -> None:
    make_function("crasher", PID_OR_CRASH)
    _, first_pid = invoke_json(lambda_client, "crasher")

    response, payload = invoke_json(lambda_client, "crasher", {"crash": True})
    _, next_pid = invoke_json(lambda_client, "crasher")

    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "Runtime.ExitError"
    request_id = response["ResponseMetadata"]["RequestId"]
    assert payload["errorMessage"] == f"RequestId: {request_id} Error: Runtime exited with error: exit status 1"
    assert next_pid != first_pid
    assert runtime.worker_pids("crasher") == [next_pid]


def test_a_worker_killed_while_idle_is_replaced_unseen(
    make_function: FunctionMaker, lambda_client: Any, runtime: LocalLambdaRuntime
) -> None:
    make_function("victim", PID_OR_CRASH)
    _, first_pid = invoke_json(lambda_client, "victim")

    os.kill(first_pid, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{first_pid}/status").exists() or _is_zombie(first_pid), "the worker to die")
    response, next_pid = invoke_json(lambda_client, "victim")

    assert "FunctionError" not in response
    assert next_pid != first_pid


def test_one_functions_crash_leaves_the_others_working(
    make_function: FunctionMaker, lambda_client: Any, runtime: LocalLambdaRuntime
) -> None:
    make_function("crasher", PID_OR_CRASH)
    make_function("bystander", PID_OR_CRASH)
    _, bystander_pid = invoke_json(lambda_client, "bystander")

    with ThreadPoolExecutor(4) as pool:
        crashes = [pool.submit(invoke_json, lambda_client, "crasher", {"crash": True}) for _ in range(3)]
        bystanders = [pool.submit(invoke_json, lambda_client, "bystander") for _ in range(3)]
        crash_errors = [call.result()[1]["errorType"] for call in crashes]
        bystander_answers = [call.result()[0] for call in bystanders]

    assert crash_errors == ["Runtime.ExitError"] * 3
    assert all("FunctionError" not in answer for answer in bystander_answers)
    assert bystander_pid in runtime.worker_pids("bystander")  # its warm worker was untouched
    assert isinstance(invoke_json(lambda_client, "crasher")[1], int)


@pytest.mark.parametrize(
    ("code", "handler", "error_type"),
    [
        ("import no_such_module\n", "handler.lambda_handler", "Runtime.ImportModuleError"),
        ("def other(event, context):\n    return 1\n", "handler.lambda_handler", "Runtime.HandlerNotFound"),
        ("def lambda_handler(event, context)\n", "handler.lambda_handler", "Runtime.UserCodeSyntaxError"),
        ("raise RuntimeError('no config')\n", "handler.lambda_handler", "RuntimeError"),
        ("def lambda_handler(event, context):\n    return 1\n", "missing.lambda_handler", "Runtime.ImportModuleError"),
    ],
)
def test_a_handler_that_cannot_load_reports_an_init_error(
    make_function: FunctionMaker, lambda_client: Any, code: str, handler: str, error_type: str
) -> None:
    directory = make_function("broken", code, handler=handler)

    response, payload = invoke_json(lambda_client, "broken")

    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == error_type
    # Fixed, it loads on the next call: a failed initialisation is not kept.
    (directory / "function.json").write_text(json.dumps({}))
    (directory / "handler.py").write_text("def lambda_handler(event, context):\n    return 'fixed'\n")
    assert invoke_json(lambda_client, "broken")[1] == "fixed"


def test_a_result_that_is_not_json_is_a_marshal_error(make_function: FunctionMaker, lambda_client: Any) -> None:
    make_function(
        "unmarshallable",
        """
        import decimal

        def lambda_handler(event, context):
            if event.get("decimal"):
                return {"price": decimal.Decimal("1.5")}
            return {1, 2}
        """,
    )

    response, payload = invoke_json(lambda_client, "unmarshallable")
    _, decimal_payload = invoke_json(lambda_client, "unmarshallable", {"decimal": True})

    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "Runtime.MarshalError"
    assert "set is not JSON serializable" in payload["errorMessage"]
    assert decimal_payload == {"price": 1.5}  # Decimal, as DynamoDB returns numbers, is serialised as Lambda does


def test_a_handler_edit_is_picked_up_without_a_restart(
    make_function: FunctionMaker, lambda_client: Any, runtime: LocalLambdaRuntime
) -> None:
    code = """
import os

def lambda_handler(event, context):
    return {"answer": ANSWER, "pid": os.getpid()}
"""
    directory = make_function("editable", 'ANSWER = "one"\n' + code)
    _, before = invoke_json(lambda_client, "editable")

    (directory / "handler.py").write_text('ANSWER = "two"\n' + code)
    _, after = invoke_json(lambda_client, "editable")
    _, again = invoke_json(lambda_client, "editable")

    assert before["answer"] == "one"
    assert after["answer"] == "two"
    assert after["pid"] != before["pid"]  # a cold start with the new code
    assert again["pid"] == after["pid"]  # which then stays warm
    wait_for(lambda: before["pid"] not in runtime.worker_pids("editable"), "the stale worker to be retired")


def test_a_changed_helper_module_or_manifest_is_picked_up(make_function: FunctionMaker, lambda_client: Any) -> None:
    directory = make_function(
        "composed",
        """
        import os
        import settings

        def lambda_handler(event, context):
            return [settings.VALUE, os.environ.get("MODE")]
        """,
        environment={"MODE": "a"},
    )
    (directory / "settings.py").write_text("VALUE = 1\n")
    assert invoke_json(lambda_client, "composed")[1] == [1, "a"]

    (directory / "settings.py").write_text("VALUE = 2\n")
    assert invoke_json(lambda_client, "composed")[1] == [2, "a"]

    (directory / "function.json").write_text(json.dumps({"environment": {"MODE": "b"}}))
    assert invoke_json(lambda_client, "composed")[1] == [2, "b"]


def test_new_function_folders_are_served_without_a_restart(
    make_function: FunctionMaker, lambda_client: Any, functions_dir: Path
) -> None:
    assert lambda_client.list_functions()["Functions"] == []

    make_function("late", "def lambda_handler(event, context):\n    return 'here'\n")

    assert [f["FunctionName"] for f in lambda_client.list_functions()["Functions"]] == ["late"]
    assert invoke_json(lambda_client, "late")[1] == "here"


def test_a_function_at_its_concurrency_is_throttled_at_once(
    make_function: FunctionMaker, lambda_client: Any, exchange_dir: Path
) -> None:
    make_function("single", GATED, concurrency=1)
    started, release = exchange_dir / "started", exchange_dir / "release"

    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(invoke_json, lambda_client, "single", {"started": str(started), "release": str(release)})
        try:
            wait_for(started.exists, "the first call to start")
            began = time.monotonic()
            with pytest.raises(lambda_client.exceptions.TooManyRequestsException) as refused:
                lambda_client.invoke(FunctionName="single", Payload=b"{}")
            refused_after = time.monotonic() - began
        finally:
            release.touch()
        assert slow.result()[1] == "done"

    assert refused_after < 2.0  # refused, not queued behind the running call
    assert refused.value.response["Error"]["Code"] == "TooManyRequestsException"
    assert refused.value.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert invoke_json(lambda_client, "single")[1] == "done"  # a free worker again


def test_events_wait_for_a_busy_function_instead_of_being_refused(
    make_function: FunctionMaker, lambda_client: Any, exchange_dir: Path
) -> None:
    make_function("single", GATED, concurrency=1)
    started, release, marker = exchange_dir / "started", exchange_dir / "release", exchange_dir / "event-ran"

    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(invoke_json, lambda_client, "single", {"started": str(started), "release": str(release)})
        try:
            wait_for(started.exists, "the first call to start")
            queued = lambda_client.invoke(
                FunctionName="single", InvocationType="Event", Payload=json.dumps({"path": str(marker)})
            )
            assert queued["StatusCode"] == 202
            assert not marker.exists()
        finally:
            release.touch()
        slow.result()

    wait_for(marker.exists, "the queued event to run")


def test_a_deeply_nested_result_is_a_marshal_error(make_function: FunctionMaker, lambda_client: Any) -> None:
    make_function(
        "nested",
        """
        def lambda_handler(event, context):
            result = []
            for _ in range(100_000):
                result = [result]
            return result
        """,
    )

    response, payload = invoke_json(lambda_client, "nested")

    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "Runtime.MarshalError"
    assert payload["errorMessage"].startswith("Unable to marshal response: maximum recursion depth exceeded")


def test_a_handler_that_exits_0_is_reported_as_lambda_words_it(
    make_function: FunctionMaker, lambda_client: Any
) -> None:
    make_function("quitter", "import sys\n\ndef lambda_handler(event, context):\n    sys.exit(event.get('code', 0))\n")

    response, payload = invoke_json(lambda_client, "quitter")
    _, with_status = invoke_json(lambda_client, "quitter", {"code": 2})

    request_id = response["ResponseMetadata"]["RequestId"]
    assert payload == {
        "errorMessage": f"RequestId: {request_id} Error: Runtime exited without providing a reason",
        "errorType": "Runtime.ExitError",
    }
    assert with_status["errorMessage"].endswith("Error: Runtime exited with error: exit status 2")


def test_processes_a_handler_starts_end_with_its_worker(make_function: FunctionMaker, functions_dir: Path) -> None:
    make_function(
        "spawner",
        """
        import os
        import subprocess
        import sys

        def lambda_handler(event, context):
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            if event.get("crash"):
                print(child.pid, flush=True)
                os._exit(1)
            return child.pid
        """,
    )
    with LocalLambdaRuntime(functions_dir, port=0, region=REGION).run_in_thread() as running:
        client = make_lambda_client(running.endpoint_url)
        crashed, _ = invoke_json(client, "spawner", {"crash": True}, LogType="Tail")
        orphaned_by_crash = int(_log(crashed).split("\n")[1])
        _, left_running = invoke_json(client, "spawner")

        wait_for(lambda: _is_gone(orphaned_by_crash), "the crashed worker's child to end")
        assert not _is_gone(left_running)  # a warm worker's children are left alone
    wait_for(lambda: _is_gone(left_running), "the stopped worker's child to end")


def test_a_handler_printing_without_end_does_not_fill_the_disk(
    make_function: FunctionMaker, lambda_client: Any
) -> None:
    make_function(
        "flood",
        """
        import os
        import sys
        import time

        def lambda_handler(event, context):
            largest_log = 0
            line = "x" * 10_000 + "\\n"
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline:
                for _ in range(100):
                    sys.stdout.write(line)
                largest_log = max(largest_log, os.fstat(sys.stdout.fileno()).st_size)
            print("the end")
            return largest_log
        """,
    )

    response, largest_log = invoke_json(lambda_client, "flood", LogType="Tail")

    assert largest_log < 128 * 1024 * 1024  # unbounded, it reaches hundreds of MB in 0.3 s
    log = _log(response)
    assert len(log.encode()) == 4096
    assert "x\nthe end\nEND RequestId:" in log


def test_calls_and_crashes_leak_no_file_descriptors_or_processes(
    make_function: FunctionMaker, lambda_client: Any, runtime: LocalLambdaRuntime
) -> None:
    make_function("crasher", PID_OR_CRASH)
    invoke_json(lambda_client, "crasher")  # the client's connection and a warm worker exist from here on
    descriptors_before = len(os.listdir("/proc/self/fd"))

    answers = [invoke_json(lambda_client, "crasher", {"crash": number % 10 == 0})[1] for number in range(150)]
    wait_for(lambda: len(os.listdir("/proc/self/fd")) <= descriptors_before, "the crashed workers' files to close")

    assert sum(isinstance(answer, dict) for answer in answers) == 15  # each crash answered Runtime.ExitError
    workers = {answer for answer in answers if isinstance(answer, int)}
    assert len(workers) == 15  # a fresh worker after each crash
    assert runtime.worker_pids("crasher") == [answers[-1]]
    assert all(_is_gone(pid) for pid in workers - {answers[-1]})


def _log(response: dict[str, Any]) -> str:
    return base64.b64decode(response["LogResult"]).decode()


def _is_zombie(pid: int) -> bool:
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


def _is_gone(pid: int) -> bool:
    """Whether a process has ended (a zombie not yet reaped by its new parent counts as ended)."""
    return _is_zombie(pid)
