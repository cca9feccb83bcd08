"""The minimal gateway: LambdaAction.InvokeFunction that only runs boto3's invoke on an executor.

    PYTHONPATH=bench:. python -m gateway_compare.minimal_gateway --endpoint-url URL --port N [--threads 64]

No authentication, no record, no checks, no other method: the least a Python gRPC gateway in front of Lambda
does, and so the ceiling of the module's design. It stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from gateway_compare.boto import plain_lambda_client
from proto import lambda_action_pb2 as pb
from proto import lambda_action_pb2_grpc as pb_grpc


class MinimalGateway(pb_grpc.LambdaActionServicer):
    """InvokeFunction as boto3's invoke on a thread; a failure is whatever gRPC makes of the exception."""

    def __init__(self, client: Any, executor: ThreadPoolExecutor) -> None:
        self._client = client
        self._executor = executor

    async def InvokeFunction(
        self, request: pb.InvokeFunctionRequest, context: grpc.aio.ServicerContext
    ) -> pb.InvokeFunctionResponse:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._invoke, request)

    def _invoke(self, request: pb.InvokeFunctionRequest) -> pb.InvokeFunctionResponse:
        response = self._client.invoke(FunctionName=request.function_name, Payload=request.payload.encode())
        function_error = response.get("FunctionError", "")
        return pb.InvokeFunctionResponse(
            success=not function_error,
            status_code=response["StatusCode"],
            payload=response["Payload"].read().decode(),
            function_error=function_error,
            executed_version=response.get("ExecutedVersion", ""),
        )


async def serve(endpoint_url: str, port: int, threads: int) -> None:
    """Serve on 127.0.0.1:`port` until SIGTERM or SIGINT."""
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lambda") as executor:
        await serve_until_stopped(MinimalGateway(plain_lambda_client(endpoint_url, threads), executor), port)


async def serve_until_stopped(servicer: pb_grpc.LambdaActionServicer, port: int) -> None:
    """Serve `servicer` on 127.0.0.1:`port` until SIGTERM or SIGINT, then stop with a second's grace."""
    server = grpc.aio.server()
    pb_grpc.add_LambdaActionServicer_to_server(servicer, server)
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise SystemExit(f"cannot listen on 127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(grace=1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--endpoint-url", required=True, help="the Lambda endpoint, e.g. http://127.0.0.1:9001")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=64, help="executor threads and pooled connections")
    args = parser.parse_args()
    asyncio.run(serve(args.endpoint_url, args.port, args.threads))


if __name__ == "__main__":
    main()
