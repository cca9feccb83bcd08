"""Request ids and W3C traceparents as the transports take them from callers."""

from __future__ import annotations

import pytest

from services.tracing import trace_of

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize("given", ["router-7f3a", "0d6e8f7a-3b1c-4d2e-9f80-a1b2c3d4e5f6", "a" * 128, "a:b/c=d+e@f"])
def test_a_well_formed_request_id_is_kept(given: str):
    assert trace_of(given, None).request_id == given


@pytest.mark.parametrize("given", [None, "", "a" * 129, "has space", "line\nbreak", "é", "semi;colon"])
def test_anything_else_gets_a_new_id(given: str | None):
    made = trace_of(given, None).request_id

    assert made != given
    assert len(made) == 32
    assert int(made, 16) >= 0


def test_a_traceparent_becomes_the_x_ray_header_lambda_reads():
    trace = trace_of(None, TRACEPARENT)

    assert trace.traceparent == TRACEPARENT
    assert trace.amzn_trace_id == "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1"


@pytest.mark.parametrize(
    "given",
    [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        TRACEPARENT + "\n",
        "garbage",
    ],
)
def test_an_invalid_traceparent_is_dropped(given: str):
    trace = trace_of("id", given)

    assert trace.traceparent is None
    assert trace.amzn_trace_id is None
