"""The proto: the generated modules match it, and the fields routers in the field depend on never move."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from google.protobuf.descriptor import FieldDescriptor
from grpc_tools import protoc

from proto import lambda_action_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ("lambda_action_pb2.py", "lambda_action_pb2.pyi", "lambda_action_pb2_grpc.py")

STRING, BOOL, INT32 = FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BOOL, FieldDescriptor.TYPE_INT32
MESSAGE = FieldDescriptor.TYPE_MESSAGE

# The wire format routers already speak: message -> field -> (number, type, repeated).
WIRE_CONTRACT: dict[str, dict[str, tuple[int, int, bool]]] = {
    "InvokeFunctionRequest": {
        "function_name": (1, STRING, False),
        "payload": (2, STRING, False),
        "invocation_type": (3, STRING, False),
        "alias": (4, STRING, False),
        "version": (5, STRING, False),
        "token": (6, STRING, False),
    },
    "InvokeFunctionResponse": {
        "success": (1, BOOL, False),
        "status_code": (2, INT32, False),
        "payload": (3, STRING, False),
        "function_error": (4, STRING, False),
        "log_result": (5, STRING, False),
        "executed_version": (6, STRING, False),
        "error": (7, STRING, False),
    },
    "InvokeAsyncRequest": {
        "function_name": (1, STRING, False),
        "payload": (2, STRING, False),
        "token": (3, STRING, False),
    },
    "InvokeAsyncResponse": {
        "success": (1, BOOL, False),
        "status_code": (2, INT32, False),
        "request_id": (3, STRING, False),
        "error": (4, STRING, False),
    },
    "BatchInvokeRequest": {"invocations": (1, MESSAGE, True), "token": (2, STRING, False)},
    "BatchInvokeResponse": {"responses": (1, MESSAGE, True)},
    "ListFunctionsRequest": {
        "token": (1, STRING, False),
        "max_items": (2, INT32, False),
        "next_marker": (3, STRING, False),
    },
    "ListFunctionsResponse": {
        "success": (1, BOOL, False),
        "functions": (2, MESSAGE, True),
        "next_marker": (3, STRING, False),
        "error": (4, STRING, False),
    },
    "FunctionInfo": {
        "function_name": (1, STRING, False),
        "function_arn": (2, STRING, False),
        "runtime": (3, STRING, False),
        "role": (4, STRING, False),
        "handler": (5, STRING, False),
        "code_size": (6, INT32, False),
        "description": (7, STRING, False),
        "timeout": (8, INT32, False),
        "memory_size": (9, INT32, False),
        "last_modified": (10, STRING, False),
        "version": (11, STRING, False),
    },
    "GetFunctionConfigRequest": {"function_name": (1, STRING, False), "token": (2, STRING, False)},
    "GetFunctionConfigResponse": {
        "success": (1, BOOL, False),
        "function_info": (2, MESSAGE, False),
        "error": (3, STRING, False),
    },
}

RPCS = {
    "InvokeFunction": ("InvokeFunctionRequest", "InvokeFunctionResponse"),
    "InvokeAsync": ("InvokeAsyncRequest", "InvokeAsyncResponse"),
    "BatchInvoke": ("BatchInvokeRequest", "BatchInvokeResponse"),
    "ListFunctions": ("ListFunctionsRequest", "ListFunctionsResponse"),
    "GetFunctionConfig": ("GetFunctionConfigRequest", "GetFunctionConfigResponse"),
}


def test_generated_modules_match_the_proto(tmp_path: Path):
    (tmp_path / "proto").mkdir()
    shutil.copy(ROOT / "proto" / "lambda_action.proto", tmp_path / "proto")
    arguments = ["protoc", f"-I{tmp_path}", f"--python_out={tmp_path}", f"--pyi_out={tmp_path}"]
    arguments += [f"--grpc_python_out={tmp_path}", str(tmp_path / "proto" / "lambda_action.proto")]
    assert protoc.main(arguments) == 0
    for name in GENERATED:
        fresh = (tmp_path / "proto" / name).read_text()
        assert (ROOT / "proto" / name).read_text() == fresh, f"proto/{name} is stale: run `make proto`"


def test_the_package_and_service_keep_their_names():
    assert pb.DESCRIPTOR.package == "lambda_action"
    service = pb.DESCRIPTOR.services_by_name["LambdaAction"]
    assert service.full_name == "lambda_action.LambdaAction"
    for name, (request, response) in RPCS.items():
        method = service.methods_by_name[name]
        assert (method.input_type.name, method.output_type.name) == (request, response)
        assert not method.client_streaming
        assert not method.server_streaming


@pytest.mark.parametrize("message", sorted(WIRE_CONTRACT))
def test_fields_routers_depend_on_keep_their_number_and_type(message: str):
    descriptor = pb.DESCRIPTOR.message_types_by_name[message]
    for name, (number, kind, repeated) in WIRE_CONTRACT[message].items():
        field = descriptor.fields_by_name[name]
        assert (field.number, field.type) == (number, kind), f"{message}.{name} moved"
        assert field.is_repeated == repeated, f"{message}.{name} changed cardinality"


def test_added_fields_never_reuse_a_contract_number():
    for message, contract in WIRE_CONTRACT.items():
        descriptor = pb.DESCRIPTOR.message_types_by_name[message]
        taken = {number for number, _, _ in contract.values()}
        for field in descriptor.fields:
            if field.name not in contract:
                assert field.number not in taken, f"{message}.{field.name} reuses number {field.number}"
