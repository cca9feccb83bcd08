"""The LambdaAction servicer: parse the message, await the service, render the reply."""

from __future__ import annotations

import grpc

from grpc_api import convert
from grpc_api.interceptor import REPLAYED_METADATA, call_deadline, current_caller, idempotency_key
from proto import lambda_action_pb2 as pb
from proto import lambda_action_pb2_grpc as pb_grpc
from services.domain import MAX_LIST_PAGE, InvokeResult
from services.errors import ServiceError
from services.history import DEFAULT_HISTORY_PAGE, InvocationHistory
from services.lambda_service import LambdaService


class LambdaActionServicer(pb_grpc.LambdaActionServicer):
    """Every RPC goes through ServiceGuard first: the caller is known and errors become statuses."""

    def __init__(self, service: LambdaService, history: InvocationHistory) -> None:
        self._service = service
        self._history = history

    async def InvokeFunction(
        self, request: pb.InvokeFunctionRequest, context: grpc.aio.ServicerContext
    ) -> pb.InvokeFunctionResponse:
        invoke = convert.invoke_request(request, idempotency_key(context))
        result = await self._service.invoke(invoke, current_caller(), "grpc", deadline=call_deadline(context))
        _mark_replayed(result, context)
        return convert.invoke_response(result)

    async def InvokeAsync(
        self, request: pb.InvokeAsyncRequest, context: grpc.aio.ServicerContext
    ) -> pb.InvokeAsyncResponse:
        result = await self._service.invoke_async(
            request.function_name,
            convert.payload_bytes(request.payload),
            current_caller(),
            "grpc",
            deadline=call_deadline(context),
            idempotency_key=idempotency_key(context),
        )
        _mark_replayed(result, context)
        return convert.invoke_async_response(result)

    async def BatchInvoke(
        self, request: pb.BatchInvokeRequest, context: grpc.aio.ServicerContext
    ) -> pb.BatchInvokeResponse:
        items = [convert.batch_item(index, item) for index, item in enumerate(request.invocations)]
        outcomes = await self._service.batch_invoke(
            items,
            current_caller(),
            "grpc",
            deadline=call_deadline(context),
            idempotency_key=idempotency_key(context),
        )
        return pb.BatchInvokeResponse(
            responses=[
                convert.batch_error_response(outcome)
                if isinstance(outcome, ServiceError)
                else convert.invoke_response(outcome)
                for outcome in outcomes
            ]
        )

    async def ListFunctions(
        self, request: pb.ListFunctionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListFunctionsResponse:
        page = await self._service.list_functions(
            current_caller(), request.max_items or MAX_LIST_PAGE, request.next_marker or None
        )
        return pb.ListFunctionsResponse(
            success=True,
            functions=[convert.function_info(info) for info in page.functions],
            next_marker=page.next_marker or "",
        )

    async def GetFunctionConfig(
        self, request: pb.GetFunctionConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetFunctionConfigResponse:
        info = await self._service.get_function_config(
            current_caller(), request.function_name, request.qualifier or None
        )
        return pb.GetFunctionConfigResponse(success=True, function_info=convert.function_info(info))

    async def ListInvocations(
        self, request: pb.ListInvocationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListInvocationsResponse:
        page = await self._history.list(
            current_caller(),
            convert.history_filter(request),
            request.limit or DEFAULT_HISTORY_PAGE,
            request.cursor or None,
        )
        return pb.ListInvocationsResponse(
            invocations=[convert.invocation_record(record) for record in page.items],
            next_cursor=page.next_cursor or "",
        )

    async def GetInvocation(
        self, request: pb.GetInvocationRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetInvocationResponse:
        return convert.invocation_response(await self._history.get(current_caller(), request.invocation_id))

    async def GetStats(self, request: pb.GetStatsRequest, context: grpc.aio.ServicerContext) -> pb.GetStatsResponse:
        report = await self._history.stats(
            current_caller(),
            since=convert.optional_instant(request.since, "since"),
            until=convert.optional_instant(request.until, "until"),
            function_name=request.function_name or None,
        )
        return convert.stats_response(report)


def _mark_replayed(result: InvokeResult, context: grpc.aio.ServicerContext) -> None:
    if result.replayed:
        context.set_trailing_metadata(((REPLAYED_METADATA, "true"),))
