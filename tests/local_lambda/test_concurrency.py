"""Concurrency as Lambda counts it, through boto3: a runtime-wide pool, reservations, and Lambda's throttle reasons."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from local_lambda import LocalLambdaRuntime
from local_lambda.settings import RuntimeSettings
from tests.local_lambda.conftest import (
    GATHERING,
    REGION,
    FunctionMaker,
    gated_handler,
    invoke_json,
    make_lambda_client,
    wait_for,
)

# Answers with its worker's pid, so that tests tell the workers apart.
HELD = gated_handler("os.getpid()")


@pytest.fixture
def small_runtime(functions_dir: Path, dead_letter_dir: Path) -> Iterator[LocalLambdaRuntime]:
    """A runtime whose runtime-wide limit is 3 calls at once."""
    settings = RuntimeSettings(max_concurrency=3, event_retry_delays=(0.05, 0.1), dead_letter_dir=dead_letter_dir)
    with LocalLambdaRuntime(functions_dir, port=0, region=REGION, settings=settings).run_in_thread() as running:
        yield running


def _hold(pool: ThreadPoolExecutor, client: Any, name: str, folder: Path, tag: str) -> Future[Any]:
    """Start a call of `name` that runs until `folder`/release exists; wait until it has started."""
    started = folder / f"started-{tag}"
    call = pool.submit(invoke_json, client, name, {"started": str(started), "release": str(folder / "release")})
    wait_for(started.exists, f"call {tag} to start")
    return call


def _throttle_reason(client: Any, name: str) -> str:
    with pytest.raises(client.exceptions.TooManyRequestsException) as refused:
        client.invoke(FunctionName=name, Payload=b"{}")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    return str(refused.value.response["Reason"])


def test_an_unreserved_function_runs_more_than_four_calls_at_once(
    make_function: FunctionMaker, lambda_client: Any, exchange_dir: Path
) -> None:
    make_function(
        "gathering",
        GATHERING,
    )
    folder = exchange_dir / "arrivals"
    folder.mkdir()
    folder.chmod(0o777)  # the handlers write here, as the runtime's unprivileged user when it runs as root

    with ThreadPoolExecutor(6) as pool:
        calls = [
            pool.submit(invoke_json, lambda_client, "gathering", {"folder": str(folder), "expected": 6})
            for _ in range(6)
        ]
        pids = {call.result()[1] for call in calls}

    assert len(pids) == 6  # all six at once, none throttled, as on Lambda without a reservation


def test_reservations_and_the_shared_pool_throttle_with_lambdas_reasons(
    make_function: FunctionMaker, small_runtime: LocalLambdaRuntime, exchange_dir: Path
) -> None:
    client = make_lambda_client(small_runtime.endpoint_url)
    make_function("reserving", HELD, concurrency=2)
    make_function("shared-a", HELD)
    make_function("shared-b", HELD)
    # The runtime-wide limit is 3; "reserving" keeps 2 of them, so unreserved functions share 1.

    with ThreadPoolExecutor(3) as pool:
        try:
            held = [_hold(pool, client, "shared-a", exchange_dir, "a")]
            shared_refusal = _throttle_reason(client, "shared-b")
            # The reservation is there whatever the shared pool does, and no more than it.
            held += [_hold(pool, client, "reserving", exchange_dir, tag) for tag in ("r1", "r2")]
            reserved_refusal = _throttle_reason(client, "reserving")
        finally:
            (exchange_dir / "release").touch()
        pids = [call.result()[1] for call in held]

    assert shared_refusal == "ConcurrentInvocationLimitExceeded"
    assert reserved_refusal == "ReservedFunctionConcurrentInvocationLimitExceeded"
    assert len(set(pids)) == 3
    assert invoke_json(client, "shared-b")[1] != os.getpid()  # free again once the calls ended


def test_a_reservation_of_zero_throttles_every_call(make_function: FunctionMaker, lambda_client: Any) -> None:
    make_function("stopped", HELD, concurrency=0)

    assert _throttle_reason(lambda_client, "stopped") == "ReservedFunctionConcurrentInvocationLimitExceeded"


def test_idle_workers_of_all_functions_stay_within_the_runtime_wide_limit(
    make_function: FunctionMaker, small_runtime: LocalLambdaRuntime
) -> None:
    client = make_lambda_client(small_runtime.endpoint_url)
    names = ["first", "second", "third", "fourth"]
    for name in names:
        make_function(name, HELD)

    for name in names:
        invoke_json(client, name)

    # The limit is 3: the fourth function's worker took the place of the least recently used one.
    assert [len(small_runtime.worker_pids(name)) for name in names] == [0, 1, 1, 1]


def test_reserved_functions_keep_their_idle_workers_past_the_runtime_wide_limit(
    make_function: FunctionMaker, small_runtime: LocalLambdaRuntime
) -> None:
    client = make_lambda_client(small_runtime.endpoint_url)
    names = ["first", "second", "third", "fourth"]
    for name in names:
        make_function(name, HELD, concurrency=1)

    for name in names:
        invoke_json(client, name)
    pids = [small_runtime.worker_pids(name) for name in names]
    for name in names:
        invoke_json(client, name)

    # Reservations (4 in all, over the limit of 3) are each function's own: no warm worker is taken from them.
    assert [len(found) for found in pids] == [1, 1, 1, 1]
    assert [small_runtime.worker_pids(name) for name in names] == pids
