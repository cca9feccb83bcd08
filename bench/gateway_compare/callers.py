"""The paths a call takes to a function: boto3 straight to the endpoint, or a gateway over gRPC or REST.

Each path sends the same event and checks the answer is the function's result, so an error is never counted
as a call.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import grpc

from gateway_compare.boto import plain_lambda_client
from gateway_compare.servers import Server
from proto import lambda_action_pb2 as pb
from proto import lambda_action_pb2_grpc as pb_grpc

EVENT_TEXT = json.dumps({"command": "!help", "user": "john"})
CALL_TIMEOUT_SECONDS = 30.0


class CallFailed(Exception):
    """The call was answered, but not with the function's result."""


class DirectPath:
    """boto3 straight to the endpoint: one client shared by every caller thread."""

    blocking = True
    server: Server | None = None

    def __init__(self, endpoint_url: str, connections: int) -> None:
        self.key = "direct"
        self.label = "direct boto3"
        self.invocations = 0
        self._client = plain_lambda_client(endpoint_url, connections)

    async def open(self) -> None:
        """Nothing to open: the client connects on its first call."""

    async def close(self) -> None:
        self._client.close()

    def invoke_blocking(self, function: str) -> None:
        response = self._client.invoke(FunctionName=function, Payload=EVENT_TEXT.encode())
        payload = response["Payload"].read()
        if response.get("FunctionError"):
            raise CallFailed(f"{response['FunctionError']}: {payload[:200]!r}")


class GrpcPath:
    """LambdaAction over one gRPC channel; the token in the metadata, in the message (as older routers), or none."""

    blocking = False

    def __init__(self, key: str, label: str, server: Server, token_in: str | None) -> None:
        self.key = key
        self.label = label
        self.server: Server | None = server
        self.invocations = 0
        self._target = server.grpc_target
        self._message_token = server.token if token_in == "message" else ""
        self._metadata = (("authorization", f"Bearer {server.token}"),) if token_in == "metadata" else None
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None

    async def open(self) -> None:
        self._channel = grpc.aio.insecure_channel(self._target)
        self._stub = pb_grpc.LambdaActionStub(self._channel)
        await self._channel.channel_ready()

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def invoke(self, function: str) -> None:
        self.invocations += 1
        request = pb.InvokeFunctionRequest(function_name=function, payload=EVENT_TEXT, token=self._message_token)
        reply = await self._stub.InvokeFunction(request, metadata=self._metadata, timeout=CALL_TIMEOUT_SECONDS)
        if not reply.success:
            raise CallFailed(reply.error or reply.function_error or f"success=false, status {reply.status_code}")

    async def batch(self, function: str, size: int) -> int:
        """One BatchInvoke of `size` calls of `function`; how many items failed."""
        self.invocations += size
        items = [pb.InvokeFunctionRequest(function_name=function, payload=EVENT_TEXT) for _ in range(size)]
        request = pb.BatchInvokeRequest(invocations=items, token=self._message_token)
        reply = await self._stub.BatchInvoke(request, metadata=self._metadata, timeout=CALL_TIMEOUT_SECONDS)
        return size - sum(1 for item in reply.responses if item.success)


class RestPath:
    """POST /api/v1/invoke with a bearer token, over kept-alive connections (aiohttp)."""

    blocking = False

    def __init__(self, key: str, label: str, server: Server, connections: int, *, payload_as_text: bool) -> None:
        assert server.rest_url is not None
        self.key = key
        self.label = label
        self.server: Server | None = server
        self.invocations = 0
        self._url = f"{server.rest_url}/api/v1/invoke"
        self._headers = {"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"}
        self._connections = connections
        # The module takes the event as JSON; the peer hands its `payload` to Lambda as is, so it needs text.
        self._payload: Any = EVENT_TEXT if payload_as_text else json.loads(EVENT_TEXT)
        self._bodies: dict[str, bytes] = {}
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._connections, keepalive_timeout=60)
        timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT_SECONDS)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def invoke(self, function: str) -> None:
        assert self._session is not None
        self.invocations += 1
        body = self._bodies.get(function)
        if body is None:
            body = self._bodies[function] = json.dumps({"function_name": function, "payload": self._payload}).encode()
        async with self._session.post(self._url, data=body, headers=self._headers) as response:
            answer = await response.read()
        if response.status != 200 or not json.loads(answer).get("success"):
            raise CallFailed(f"HTTP {response.status}: {answer[:200]!r}")


CallPath = DirectPath | GrpcPath | RestPath
