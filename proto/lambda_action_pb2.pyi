from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InvokeFunctionRequest(_message.Message):
    __slots__ = ("function_name", "payload", "invocation_type", "alias", "version", "token", "client_context")
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    INVOCATION_TYPE_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CLIENT_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    function_name: str
    payload: str
    invocation_type: str
    alias: str
    version: str
    token: str
    client_context: str
    def __init__(self, function_name: _Optional[str] = ..., payload: _Optional[str] = ..., invocation_type: _Optional[str] = ..., alias: _Optional[str] = ..., version: _Optional[str] = ..., token: _Optional[str] = ..., client_context: _Optional[str] = ...) -> None: ...

class InvokeFunctionResponse(_message.Message):
    __slots__ = ("success", "status_code", "payload", "function_error", "log_result", "executed_version", "error", "invocation_id", "request_id", "duration_ms", "error_code")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_ERROR_FIELD_NUMBER: _ClassVar[int]
    LOG_RESULT_FIELD_NUMBER: _ClassVar[int]
    EXECUTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    INVOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    status_code: int
    payload: str
    function_error: str
    log_result: str
    executed_version: str
    error: str
    invocation_id: str
    request_id: str
    duration_ms: float
    error_code: str
    def __init__(self, success: _Optional[bool] = ..., status_code: _Optional[int] = ..., payload: _Optional[str] = ..., function_error: _Optional[str] = ..., log_result: _Optional[str] = ..., executed_version: _Optional[str] = ..., error: _Optional[str] = ..., invocation_id: _Optional[str] = ..., request_id: _Optional[str] = ..., duration_ms: _Optional[float] = ..., error_code: _Optional[str] = ...) -> None: ...

class InvokeAsyncRequest(_message.Message):
    __slots__ = ("function_name", "payload", "token")
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    function_name: str
    payload: str
    token: str
    def __init__(self, function_name: _Optional[str] = ..., payload: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class InvokeAsyncResponse(_message.Message):
    __slots__ = ("success", "status_code", "request_id", "error", "invocation_id")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    INVOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    success: bool
    status_code: int
    request_id: str
    error: str
    invocation_id: str
    def __init__(self, success: _Optional[bool] = ..., status_code: _Optional[int] = ..., request_id: _Optional[str] = ..., error: _Optional[str] = ..., invocation_id: _Optional[str] = ...) -> None: ...

class BatchInvokeRequest(_message.Message):
    __slots__ = ("invocations", "token")
    INVOCATIONS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    invocations: _containers.RepeatedCompositeFieldContainer[InvokeFunctionRequest]
    token: str
    def __init__(self, invocations: _Optional[_Iterable[_Union[InvokeFunctionRequest, _Mapping]]] = ..., token: _Optional[str] = ...) -> None: ...

class BatchInvokeResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[InvokeFunctionResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[InvokeFunctionResponse, _Mapping]]] = ...) -> None: ...

class ListFunctionsRequest(_message.Message):
    __slots__ = ("token", "max_items", "next_marker")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    MAX_ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_MARKER_FIELD_NUMBER: _ClassVar[int]
    token: str
    max_items: int
    next_marker: str
    def __init__(self, token: _Optional[str] = ..., max_items: _Optional[int] = ..., next_marker: _Optional[str] = ...) -> None: ...

class ListFunctionsResponse(_message.Message):
    __slots__ = ("success", "functions", "next_marker", "error")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_MARKER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    success: bool
    functions: _containers.RepeatedCompositeFieldContainer[FunctionInfo]
    next_marker: str
    error: str
    def __init__(self, success: _Optional[bool] = ..., functions: _Optional[_Iterable[_Union[FunctionInfo, _Mapping]]] = ..., next_marker: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class FunctionInfo(_message.Message):
    __slots__ = ("function_name", "function_arn", "runtime", "role", "handler", "code_size", "description", "timeout", "memory_size", "last_modified", "version", "state", "architectures")
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_ARN_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    HANDLER_FIELD_NUMBER: _ClassVar[int]
    CODE_SIZE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_SIZE_FIELD_NUMBER: _ClassVar[int]
    LAST_MODIFIED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURES_FIELD_NUMBER: _ClassVar[int]
    function_name: str
    function_arn: str
    runtime: str
    role: str
    handler: str
    code_size: int
    description: str
    timeout: int
    memory_size: int
    last_modified: str
    version: str
    state: str
    architectures: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, function_name: _Optional[str] = ..., function_arn: _Optional[str] = ..., runtime: _Optional[str] = ..., role: _Optional[str] = ..., handler: _Optional[str] = ..., code_size: _Optional[int] = ..., description: _Optional[str] = ..., timeout: _Optional[int] = ..., memory_size: _Optional[int] = ..., last_modified: _Optional[str] = ..., version: _Optional[str] = ..., state: _Optional[str] = ..., architectures: _Optional[_Iterable[str]] = ...) -> None: ...

class GetFunctionConfigRequest(_message.Message):
    __slots__ = ("function_name", "token", "qualifier")
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    QUALIFIER_FIELD_NUMBER: _ClassVar[int]
    function_name: str
    token: str
    qualifier: str
    def __init__(self, function_name: _Optional[str] = ..., token: _Optional[str] = ..., qualifier: _Optional[str] = ...) -> None: ...

class GetFunctionConfigResponse(_message.Message):
    __slots__ = ("success", "function_info", "error")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_INFO_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    success: bool
    function_info: FunctionInfo
    error: str
    def __init__(self, success: _Optional[bool] = ..., function_info: _Optional[_Union[FunctionInfo, _Mapping]] = ..., error: _Optional[str] = ...) -> None: ...

class ListInvocationsRequest(_message.Message):
    __slots__ = ("function_name", "success", "invocation_type", "transport", "since", "until", "limit", "cursor")
    class SuccessFilter(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        SUCCESS_ANY: _ClassVar[ListInvocationsRequest.SuccessFilter]
        SUCCESS_TRUE: _ClassVar[ListInvocationsRequest.SuccessFilter]
        SUCCESS_FALSE: _ClassVar[ListInvocationsRequest.SuccessFilter]
    SUCCESS_ANY: ListInvocationsRequest.SuccessFilter
    SUCCESS_TRUE: ListInvocationsRequest.SuccessFilter
    SUCCESS_FALSE: ListInvocationsRequest.SuccessFilter
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    INVOCATION_TYPE_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    function_name: str
    success: ListInvocationsRequest.SuccessFilter
    invocation_type: str
    transport: str
    since: str
    until: str
    limit: int
    cursor: str
    def __init__(self, function_name: _Optional[str] = ..., success: _Optional[_Union[ListInvocationsRequest.SuccessFilter, str]] = ..., invocation_type: _Optional[str] = ..., transport: _Optional[str] = ..., since: _Optional[str] = ..., until: _Optional[str] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ...) -> None: ...

class InvocationRecord(_message.Message):
    __slots__ = ("invocation_id", "function_name", "invocation_type", "alias", "version", "executed_version", "success", "status_code", "function_error", "error_code", "error_message", "request_id", "caller", "transport", "invoked_at", "completed_at", "duration_ms", "idempotency_key", "payload", "response_payload", "log_tail", "altered_fields", "x_request_id")
    INVOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    INVOCATION_TYPE_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EXECUTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    INVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    LOG_TAIL_FIELD_NUMBER: _ClassVar[int]
    ALTERED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    X_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    invocation_id: str
    function_name: str
    invocation_type: str
    alias: str
    version: str
    executed_version: str
    success: bool
    status_code: int
    function_error: str
    error_code: str
    error_message: str
    request_id: str
    caller: str
    transport: str
    invoked_at: str
    completed_at: str
    duration_ms: float
    idempotency_key: str
    payload: str
    response_payload: str
    log_tail: str
    altered_fields: _containers.RepeatedScalarFieldContainer[str]
    x_request_id: str
    def __init__(self, invocation_id: _Optional[str] = ..., function_name: _Optional[str] = ..., invocation_type: _Optional[str] = ..., alias: _Optional[str] = ..., version: _Optional[str] = ..., executed_version: _Optional[str] = ..., success: _Optional[bool] = ..., status_code: _Optional[int] = ..., function_error: _Optional[str] = ..., error_code: _Optional[str] = ..., error_message: _Optional[str] = ..., request_id: _Optional[str] = ..., caller: _Optional[str] = ..., transport: _Optional[str] = ..., invoked_at: _Optional[str] = ..., completed_at: _Optional[str] = ..., duration_ms: _Optional[float] = ..., idempotency_key: _Optional[str] = ..., payload: _Optional[str] = ..., response_payload: _Optional[str] = ..., log_tail: _Optional[str] = ..., altered_fields: _Optional[_Iterable[str]] = ..., x_request_id: _Optional[str] = ...) -> None: ...

class ListInvocationsResponse(_message.Message):
    __slots__ = ("invocations", "next_cursor")
    INVOCATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    invocations: _containers.RepeatedCompositeFieldContainer[InvocationRecord]
    next_cursor: str
    def __init__(self, invocations: _Optional[_Iterable[_Union[InvocationRecord, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class GetInvocationRequest(_message.Message):
    __slots__ = ("invocation_id",)
    INVOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    invocation_id: str
    def __init__(self, invocation_id: _Optional[str] = ...) -> None: ...

class FunctionLogs(_message.Message):
    __slots__ = ("log_group", "insights_query", "lines", "note")
    LOG_GROUP_FIELD_NUMBER: _ClassVar[int]
    INSIGHTS_QUERY_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    log_group: str
    insights_query: str
    lines: _containers.RepeatedScalarFieldContainer[str]
    note: str
    def __init__(self, log_group: _Optional[str] = ..., insights_query: _Optional[str] = ..., lines: _Optional[_Iterable[str]] = ..., note: _Optional[str] = ...) -> None: ...

class GetInvocationResponse(_message.Message):
    __slots__ = ("invocation", "logs")
    INVOCATION_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    invocation: InvocationRecord
    logs: FunctionLogs
    def __init__(self, invocation: _Optional[_Union[InvocationRecord, _Mapping]] = ..., logs: _Optional[_Union[FunctionLogs, _Mapping]] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ("since", "until", "function_name")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    since: str
    until: str
    function_name: str
    def __init__(self, since: _Optional[str] = ..., until: _Optional[str] = ..., function_name: _Optional[str] = ...) -> None: ...

class FunctionStats(_message.Message):
    __slots__ = ("function_name", "count", "successes", "function_errors", "throttles", "other_failures", "success_rate", "p50_ms", "p95_ms", "p99_ms")
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SUCCESSES_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_ERRORS_FIELD_NUMBER: _ClassVar[int]
    THROTTLES_FIELD_NUMBER: _ClassVar[int]
    OTHER_FAILURES_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P95_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    function_name: str
    count: int
    successes: int
    function_errors: int
    throttles: int
    other_failures: int
    success_rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    def __init__(self, function_name: _Optional[str] = ..., count: _Optional[int] = ..., successes: _Optional[int] = ..., function_errors: _Optional[int] = ..., throttles: _Optional[int] = ..., other_failures: _Optional[int] = ..., success_rate: _Optional[float] = ..., p50_ms: _Optional[float] = ..., p95_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ...) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("since", "until", "functions", "totals")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    TOTALS_FIELD_NUMBER: _ClassVar[int]
    since: str
    until: str
    functions: _containers.RepeatedCompositeFieldContainer[FunctionStats]
    totals: FunctionStats
    def __init__(self, since: _Optional[str] = ..., until: _Optional[str] = ..., functions: _Optional[_Iterable[_Union[FunctionStats, _Mapping]]] = ..., totals: _Optional[_Union[FunctionStats, _Mapping]] = ...) -> None: ...
