"""The CloudWatch Logs reader of FETCH_FUNCTION_LOGS, through real boto3 against a hand-written FilterLogEvents."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services.lambda_client import MAX_LOG_LINES, cloudwatch_log_reader

GROUP = "/aws/lambda/waddlebot-echo"
REQUEST_ID = "8f5e2a4c-1111-4c1e-9e1d-0a1b2c3d4e5f"


class FakeLogs:
    """CloudWatch Logs' FilterLogEvents over HTTP (the JSON protocol boto3 speaks): a quoted filter pattern
    matches lines holding the term, within startTime..endTime, `limit` per page, paged by nextToken."""

    def __init__(self) -> None:
        self.events: dict[str, list[tuple[int, str]]] = {}
        self.requests: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(body)
                if self.headers.get("X-Amz-Target") != "Logs_20140328.FilterLogEvents":
                    return self._answer(400, {"__type": "UnknownOperationException", "message": "not served"})
                if body["logGroupName"] not in fake.events:
                    return self._answer(
                        400,
                        {"__type": "ResourceNotFoundException", "message": "The specified log group does not exist."},
                    )
                term = body.get("filterPattern", "").strip('"')
                matching = [
                    {"timestamp": at, "message": message}
                    for at, message in fake.events[body["logGroupName"]]
                    if term in message and body.get("startTime", 0) <= at <= body.get("endTime", 2**62)
                ]
                start = int(body.get("nextToken", "0"))
                page = matching[start : start + body.get("limit", 10_000)]
                answer: dict = {"events": page, "searchedLogStreams": []}
                if start + len(page) < len(matching):
                    answer["nextToken"] = str(start + len(page))
                self._answer(200, answer)

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLogs]:
    fake = FakeLogs()
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", fake.url)
    yield fake
    fake.close()


def _millis(moment: datetime) -> int:
    return int(moment.replace(tzinfo=UTC).timestamp() * 1000)


INVOKED = datetime(2026, 12, 1, 10, 0, 0)


def test_the_lines_of_one_request_within_its_time_are_read(make_settings, logs: FakeLogs):
    logs.events[GROUP] = [
        (_millis(INVOKED), f"START RequestId: {REQUEST_ID} Version: $LATEST\n"),
        (_millis(INVOKED) + 5, f"{REQUEST_ID}\thello\n"),
        (_millis(INVOKED) + 6, "another request's line\n"),
        (_millis(INVOKED + timedelta(hours=1)), f"{REQUEST_ID}\ttoo late to be this invocation's\n"),
    ]
    read = cloudwatch_log_reader(make_settings())

    lines = read(GROUP, REQUEST_ID, INVOKED, INVOKED + timedelta(seconds=1))

    assert lines == [f"START RequestId: {REQUEST_ID} Version: $LATEST", f"{REQUEST_ID}\thello"]
    [request] = logs.requests
    assert request["filterPattern"] == f'"{REQUEST_ID}"'


def test_pages_are_followed_up_to_the_bound(make_settings, logs: FakeLogs):
    logs.events[GROUP] = [
        (_millis(INVOKED) + index, f"{REQUEST_ID} line {index}") for index in range(MAX_LOG_LINES + 50)
    ]
    read = cloudwatch_log_reader(make_settings())

    lines = read(GROUP, REQUEST_ID, INVOKED, None)

    assert len(lines) == MAX_LOG_LINES
    assert lines[0] == f"{REQUEST_ID} line 0"


def test_a_missing_log_group_is_an_error_the_history_reports(make_settings, logs: FakeLogs):
    read = cloudwatch_log_reader(make_settings())

    with pytest.raises(Exception, match="ResourceNotFoundException"):
        read("/aws/lambda/never-ran", REQUEST_ID, INVOKED, None)
