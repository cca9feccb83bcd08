"""The Lambda REST API (the 2015-03-31 paths boto3 calls) over a LambdaRuntime.

Each route parses the request into plain values, awaits the runtime, and renders its answer; errors are
LambdaApiErrors, rendered here once in Lambda's shape.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any
from urllib.parse import unquote

from local_lambda import aliases
from local_lambda.errors import (
    InvalidParameterValue,
    InvalidRequestContent,
    LambdaApiError,
    ServiceFailure,
    UnknownOperation,
)
from local_lambda.http_server import HttpRequest, HttpResponse
from local_lambda.registry import FunctionConfiguration, unqualified_name
from local_lambda.runtime import LambdaRuntime

logger = logging.getLogger(__name__)

API_VERSION = "2015-03-31"
# The deprecated InvokeAsync (`aws lambda invoke-async`) and the event-invoke configuration live under their own dates.
INVOKE_ASYNC_API_VERSION = "2014-11-13"
EVENT_INVOKE_CONFIG_API_VERSION = "2019-09-25"
CONCURRENCY_API_VERSION = "2019-09-30"
SERVED_OPERATIONS = (
    "Invoke, InvokeAsync, ListFunctions, GetFunction, GetFunctionConfiguration, ListVersionsByFunction, "
    "PublishVersion, ListAliases, GetAlias, CreateAlias, UpdateAlias, GetFunctionConcurrency and "
    "GetFunctionEventInvokeConfig"
)
# CloudWatch Logs' operation (JSON 1.1: POST / with this target), served for the runtime's recent invocations.
FILTER_LOG_EVENTS_TARGET = "Logs_20140328.FilterLogEvents"


class LambdaApi:
    """Routes HTTP requests to the runtime's operations (SERVED_OPERATIONS)."""

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
        method = request.method
        if segments[:2] == [API_VERSION, "functions"]:
            if len(segments) == 2 and method == "GET":
                return self._list_functions(request)
            function_name, operation = segments[2:3], segments[3:]
            if function_name and not operation and method == "GET":
                return self._get_function(request, function_name[0])
            if operation == ["invocations"] and method == "POST":
                return await self._invoke(request, function_name[0], request_id)
            if operation == ["configuration"] and method == "GET":
                qualifier = request.query.get("Qualifier")
                configuration = self._runtime.get_function_configuration(function_name[0], qualifier)
                return HttpResponse.of_json(200, render_configuration(configuration))
            if operation == ["versions"] and method == "GET":
                return self._list_versions(request, function_name[0])
            if operation == ["versions"] and method == "POST":
                return await self._publish_version(request, function_name[0])
            if operation == ["aliases"] and method == "GET":
                return self._list_aliases(request, function_name[0])
            if operation == ["aliases"] and method == "POST":
                return await self._create_alias(request, function_name[0])
            if len(operation) == 2 and operation[0] == "aliases" and method == "GET":
                alias = aliases.get_alias(self._runtime.registry, function_name[0], operation[1])
                return HttpResponse.of_json(200, aliases.render_alias(alias))
            if len(operation) == 2 and operation[0] == "aliases" and method == "PUT":
                return await self._update_alias(request, function_name[0], operation[1])
        if (
            method == "POST"
            and segments[:2] == [INVOKE_ASYNC_API_VERSION, "functions"]
            and segments[3:] == ["invoke-async"]
        ):
            return await self._invoke_async(request, segments[2], request_id)
        if (
            method == "GET"
            and segments[:2] == [EVENT_INVOKE_CONFIG_API_VERSION, "functions"]
            and segments[3:] == ["event-invoke-config"]
        ):
            return self._get_event_invoke_config(request, segments[2])
        if (
            method == "GET"
            and segments[:2] == [CONCURRENCY_API_VERSION, "functions"]
            and segments[3:] == ["concurrency"]
        ):
            reserved = self._runtime.get_function(unqualified_name(segments[2])).reserved_concurrency
            # As Lambda: an empty object for a function without a reservation.
            return HttpResponse.of_json(200, {} if reserved is None else {"ReservedConcurrentExecutions": reserved})
        raise UnknownOperation(
            f"Unknown operation {request.method} {request.path}: this local Lambda runtime serves "
            f"{SERVED_OPERATIONS}, CloudWatch Logs' FilterLogEvents for its recent invocations, and GET /ping"
        )

    def _get_function(self, request: HttpRequest, function_name: str) -> HttpResponse:
        details = self._runtime.get_function(function_name, request.query.get("Qualifier"))
        answer: dict[str, Any] = {
            "Configuration": render_configuration(details.configuration),
            # Lambda answers a presigned S3 URL of the deployment package; here the code is a folder on this host.
            "Code": {"RepositoryType": "Local", "Location": details.code_location},
        }
        if details.reserved_concurrency is not None:
            answer["Concurrency"] = {"ReservedConcurrentExecutions": details.reserved_concurrency}
        return HttpResponse.of_json(200, answer)

    def _list_versions(self, request: HttpRequest, function_name: str) -> HttpResponse:
        listing = self._runtime.list_versions(
            function_name, max_items=_max_items(request), marker=request.query.get("Marker") or None
        )
        answer: dict[str, Any] = {"Versions": [render_configuration(item) for item in listing.configurations]}
        if listing.next_marker is not None:
            answer["NextMarker"] = listing.next_marker
        return HttpResponse.of_json(200, answer)

    async def _publish_version(self, request: HttpRequest, function_name: str) -> HttpResponse:
        body = _json_object(request, "PublishVersion")
        configuration = await self._runtime.publish_version(
            function_name,
            _optional_string(body, "Description"),
            code_sha256=_optional_string(body, "CodeSha256"),
            revision_id=_optional_string(body, "RevisionId"),
        )
        return HttpResponse.of_json(201, render_configuration(configuration))

    def _list_aliases(self, request: HttpRequest, function_name: str) -> HttpResponse:
        listing = aliases.list_aliases(
            self._runtime.registry,
            function_name,
            function_version=request.query.get("FunctionVersion") or None,
            max_items=_max_items(request),
            marker=request.query.get("Marker") or None,
        )
        answer: dict[str, Any] = {"Aliases": [aliases.render_alias(alias) for alias in listing.aliases]}
        if listing.next_marker is not None:
            answer["NextMarker"] = listing.next_marker
        return HttpResponse.of_json(200, answer)

    async def _create_alias(self, request: HttpRequest, function_name: str) -> HttpResponse:
        body = _json_object(request, "CreateAlias")
        _refuse_routing_config(body)
        alias_name, function_version = _optional_string(body, "Name"), _optional_string(body, "FunctionVersion")
        if alias_name is None or function_version is None:
            raise InvalidParameterValue("CreateAlias needs Name and FunctionVersion")
        alias = await asyncio.to_thread(
            aliases.create_alias,
            self._runtime.registry,
            function_name,
            alias_name,
            function_version,
            _optional_string(body, "Description") or "",
        )
        return HttpResponse.of_json(201, aliases.render_alias(alias))

    async def _update_alias(self, request: HttpRequest, function_name: str, alias_name: str) -> HttpResponse:
        body = _json_object(request, "UpdateAlias")
        _refuse_routing_config(body)
        alias = await asyncio.to_thread(
            aliases.update_alias,
            self._runtime.registry,
            function_name,
            alias_name,
            _optional_string(body, "FunctionVersion"),
            _optional_string(body, "Description"),
            _optional_string(body, "RevisionId"),
        )
        return HttpResponse.of_json(200, aliases.render_alias(alias))

    async def _invoke_async(self, request: HttpRequest, function_name: str, request_id: str) -> HttpResponse:
        """The deprecated InvokeAsync: an Event invocation under the 2014 path, answered 202 {"Status": 202}."""
        await self._runtime.invoke(
            function_name,
            request.body,
            invocation_type="Event",
            request_id=request_id,
            trace_id=request.headers.get("x-amzn-trace-id"),
        )
        return HttpResponse.of_json(202, {"Status": 202})

    def _get_event_invoke_config(self, request: HttpRequest, function_name: str) -> HttpResponse:
        config = self._runtime.get_event_invoke_config(function_name, request.query.get("Qualifier"))
        return HttpResponse.of_json(
            200,
            {
                "FunctionArn": config.function_arn,
                "MaximumRetryAttempts": config.maximum_retry_attempts,
                "MaximumEventAgeInSeconds": config.maximum_event_age_seconds,
                "LastModified": config.last_modified,
                # Failed events go to the runtime's dead-letter folder, which has no ARN to report.
                "DestinationConfig": {},
            },
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
        max_items = _max_items(request)
        function_version = request.query.get("FunctionVersion")
        if function_version not in (None, "ALL"):
            raise InvalidParameterValue("FunctionVersion must be ALL when given")
        listing = self._runtime.list_functions(
            max_items=max_items,
            marker=request.query.get("Marker") or None,
            all_versions=function_version == "ALL",
        )
        answer: dict[str, Any] = {"Functions": [render_configuration(item) for item in listing.configurations]}
        if listing.next_marker is not None:
            answer["NextMarker"] = listing.next_marker
        return HttpResponse.of_json(200, answer)


def _max_items(request: HttpRequest) -> int | None:
    max_items = request.query.get("MaxItems")
    if max_items is not None and not (max_items.isdigit() and 1 <= int(max_items) <= 10000):
        raise InvalidParameterValue("MaxItems must be a whole number from 1 to 10000")
    return None if max_items is None else int(max_items)


def _json_object(request: HttpRequest, operation: str) -> dict[str, Any]:
    """A request's JSON body, which must be an object (an empty body is an empty one)."""
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, RecursionError):
        raise InvalidRequestContent(f"the {operation} request is not JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequestContent(f"the {operation} request must be a JSON object")
    return body


def _optional_string(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidParameterValue(f"{key} must be a string")
    return value


def _refuse_routing_config(body: dict[str, Any]) -> None:
    routing = body.get("RoutingConfig")
    if routing.get("AdditionalVersionWeights") if isinstance(routing, dict) else routing:
        # Weighted aliases would send a share of calls to a second version; this runtime resolves an alias to one.
        raise InvalidParameterValue("RoutingConfig (weighted aliases) is not supported by the local Lambda runtime")


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
        "LoggingConfig": _render_logging_config(configuration),
    }


def _render_logging_config(configuration: FunctionConfiguration) -> dict[str, str]:
    """Lambda's LoggingConfig: the levels only with the JSON format, where Lambda defaults them to INFO."""
    rendered = {"LogFormat": configuration.log_format}
    if configuration.log_format == "JSON":
        rendered["ApplicationLogLevel"] = configuration.application_log_level or "INFO"
        rendered["SystemLogLevel"] = configuration.system_log_level or "INFO"
    rendered["LogGroup"] = f"/aws/lambda/{configuration.name}"
    return rendered
