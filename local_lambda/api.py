"""The Lambda REST API (the 2015-03-31 paths boto3 calls) over a LambdaRuntime.

Each route parses the request into plain values, awaits the runtime, and renders its answer; errors are
LambdaApiErrors, rendered here once in Lambda's shape.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any
from urllib.parse import unquote

from local_lambda.errors import (
    InvalidParameterValue,
    InvalidRequestContent,
    LambdaApiError,
    ServiceFailure,
    UnknownOperation,
)
from local_lambda.http_server import HttpRequest, HttpResponse
from local_lambda.registry import FunctionConfiguration
from local_lambda.runtime import LambdaRuntime

logger = logging.getLogger(__name__)

API_VERSION = "2015-03-31"
# CloudWatch Logs' operation (JSON 1.1: POST / with this target), served for the runtime's recent invocations.
FILTER_LOG_EVENTS_TARGET = "Logs_20140328.FilterLogEvents"


class LambdaApi:
    """Routes HTTP requests to the runtime's Invoke, ListFunctions and GetFunctionConfiguration."""

    def __init__(self, runtime: LambdaRuntime) -> None:
        self._runtime = runtime

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one request; every answer carries a request id, as Lambda's do."""
        request_id = str(uuid.uuid4())
        try:
            response = await self._dispatch(request, request_id)
        except LambdaApiError as error:
            response = error_response(error)
        except Exception:
            logger.exception("%s %s failed", request.method, request.path)
            response = error_response(ServiceFailure("The local Lambda runtime failed; see its log."))
        response.headers["x-amzn-RequestId"] = request_id
        response.headers["X-Amz-Request-Id"] = request_id
        return response

    async def _dispatch(self, request: HttpRequest, request_id: str) -> HttpResponse:
        segments = [unquote(segment) for segment in request.path.strip("/").split("/")]
        if request.method == "GET" and segments == ["ping"]:
            return HttpResponse.of_json(200, {"status": "ok"})
        if request.method == "POST" and request.headers.get("x-amz-target") == FILTER_LOG_EVENTS_TARGET:
            return self._filter_log_events(request)
        if segments[:2] == [API_VERSION, "functions"]:
            if len(segments) == 2 and request.method == "GET":
                return self._list_functions(request)
            if len(segments) == 4 and segments[3] == "invocations" and request.method == "POST":
                return await self._invoke(request, segments[2], request_id)
            if len(segments) == 4 and segments[3] == "configuration" and request.method == "GET":
                configuration = self._runtime.get_function_configuration(segments[2], request.query.get("Qualifier"))
                return HttpResponse.of_json(200, render_configuration(configuration))
        raise UnknownOperation(
            f"Unknown operation {request.method} {request.path}: this local Lambda runtime serves Invoke, "
            f"ListFunctions and GetFunctionConfiguration under /{API_VERSION}/functions/, CloudWatch Logs' "
            "FilterLogEvents for its recent invocations, and GET /ping"
        )

    async def _invoke(self, request: HttpRequest, function_name: str, request_id: str) -> HttpResponse:
        result = await self._runtime.invoke(
            function_name,
            request.body,
            qualifier=request.query.get("Qualifier"),
            invocation_type=request.headers.get("x-amz-invocation-type", "RequestResponse"),
            log_type=request.headers.get("x-amz-log-type"),
            client_context=request.headers.get("x-amz-client-context"),
            request_id=request_id,
            trace_id=request.headers.get("x-amzn-trace-id"),
        )
        headers = {"Content-Type": result.content_type}
        if result.executed_version is not None:
            headers["X-Amz-Executed-Version"] = result.executed_version
        if result.function_error is not None:
            headers["X-Amz-Function-Error"] = result.function_error
        if result.log_result is not None:
            headers["X-Amz-Log-Result"] = result.log_result
        return HttpResponse(result.status, result.payload, headers)

    def _filter_log_events(self, request: HttpRequest) -> HttpResponse:
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            raise InvalidRequestContent("the FilterLogEvents request is not JSON") from None
        if not isinstance(body, dict):
            raise InvalidRequestContent("the FilterLogEvents request must be a JSON object")
        try:
            answer = HttpResponse.of_json(200, self._runtime.logs.filter_log_events(body))
        except LambdaApiError as error:
            # CloudWatch Logs speaks JSON 1.1: its errors are 400s naming their type in `__type`.
            answer = HttpResponse.of_json(400, {"__type": error.error_type, "message": error.message})
        answer.headers["Content-Type"] = "application/x-amz-json-1.1"
        return answer

    def _list_functions(self, request: HttpRequest) -> HttpResponse:
        max_items = request.query.get("MaxItems")
        if max_items is not None and not (max_items.isdigit() and 1 <= int(max_items) <= 10000):
            raise InvalidParameterValue("MaxItems must be a whole number from 1 to 10000")
        function_version = request.query.get("FunctionVersion")
        if function_version not in (None, "ALL"):
            raise InvalidParameterValue("FunctionVersion must be ALL when given")
        listing = self._runtime.list_functions(
            max_items=None if max_items is None else int(max_items),
            marker=request.query.get("Marker") or None,
            all_versions=function_version == "ALL",
        )
        answer: dict[str, Any] = {"Functions": [render_configuration(item) for item in listing.configurations]}
        if listing.next_marker is not None:
            answer["NextMarker"] = listing.next_marker
        return HttpResponse.of_json(200, answer)


def error_response(error: LambdaApiError) -> HttpResponse:
    """An error in Lambda's shape: botocore takes the code from x-amzn-ErrorType, the message from the body."""
    return HttpResponse.of_json(error.status, error.body(), {"x-amzn-ErrorType": error.error_type})


def render_configuration(configuration: FunctionConfiguration) -> dict[str, Any]:
    """A function's configuration in Lambda's JSON, as GetFunctionConfiguration and ListFunctions give it."""
    return {
        "FunctionName": configuration.name,
        "FunctionArn": configuration.arn,
        "Runtime": configuration.runtime,
        "Role": configuration.role,
        "Handler": configuration.handler,
        "CodeSize": configuration.code_size,
        "Description": configuration.description,
        "Timeout": configuration.timeout,
        "MemorySize": configuration.memory_size,
        "LastModified": configuration.last_modified,
        "CodeSha256": configuration.code_sha256,
        "Version": configuration.version,
        "Environment": {"Variables": dict(configuration.environment)},
        "TracingConfig": {"Mode": "PassThrough"},
        "RevisionId": configuration.revision_id,
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip",
        "Architectures": [configuration.architecture],
        "EphemeralStorage": {"Size": 512},
    }
