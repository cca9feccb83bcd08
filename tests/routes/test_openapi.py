"""/openapi.json: public, and it describes every endpoint with its request, reply and security."""

from __future__ import annotations


async def test_openapi_describes_every_endpoint_and_which_need_a_token(client):
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = await response.get_json()
    operations = {
        (method.upper(), path): operation
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }
    assert set(operations) == {
        ("GET", "/health"),
        ("POST", "/api/v1/token"),
        ("POST", "/api/v1/invoke"),
        ("POST", "/api/v1/invoke-async"),
        ("POST", "/api/v1/batch"),
        ("GET", "/api/v1/functions"),
        ("GET", "/api/v1/functions/{function_name}"),
    }
    for key, operation in operations.items():
        needs_token = key[1].startswith("/api/v1/") and key[1] != "/api/v1/token"
        assert bool(operation.get("security")) == needs_token, key
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert {"200", "202"} <= set(operations[("POST", "/api/v1/invoke")]["responses"])
    invoke_body = operations[("POST", "/api/v1/invoke")]["requestBody"]["content"]["application/json"]["schema"]
    if "$ref" in invoke_body:
        invoke_body = document["components"]["schemas"][invoke_body["$ref"].rsplit("/", 1)[1]]
    assert invoke_body["required"] == ["function_name"]
    assert invoke_body["properties"]["invocation_type"]["enum"] == ["RequestResponse", "Event", "DryRun"]
