"""/openapi.json: public, and it describes every endpoint with its request, reply and security."""

from __future__ import annotations

import re


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
        ("GET", "/health/live"),
        ("POST", "/api/v1/token"),
        ("POST", "/api/v1/invoke"),
        ("POST", "/api/v1/invoke-async"),
        ("POST", "/api/v1/batch"),
        ("GET", "/api/v1/functions"),
        ("GET", "/api/v1/functions/{function_name}"),
        ("GET", "/api/v1/invocations"),
        ("GET", "/api/v1/invocations/{invocation_id}"),
        ("GET", "/api/v1/stats"),
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


async def _document(client) -> dict:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    return await response.get_json()


async def test_every_endpoint_documents_its_error_answers_with_the_one_error_shape(client):
    document = await _document(client)
    expected = {
        ("post", "/api/v1/token"): {"400", "401", "429", "503"},
        ("post", "/api/v1/invoke"): {"400", "401", "403", "404", "409", "413", "429", "502", "503", "504"},
        ("post", "/api/v1/invoke-async"): {"400", "401", "403", "404", "409", "413", "429", "502", "503", "504"},
        ("post", "/api/v1/batch"): {"400", "401", "413", "503"},
        ("get", "/api/v1/functions"): {"400", "401", "404", "502", "503", "504"},
        ("get", "/api/v1/functions/{function_name}"): {"400", "401", "403", "404", "502", "503", "504"},
    }
    for (method, path), statuses in expected.items():
        responses = document["paths"][path][method]["responses"]
        assert statuses <= set(responses), (method, path)
        for status in statuses:
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema["title"] == "ErrorReply", (method, path, status)
            assert set(schema["required"]) == {"error", "code"}
            # invocation_id only with 409 OutcomeUnknown: the invocation whose record will say how it ended.
            assert set(schema["properties"]) == {"success", "error", "code", "invocation_id"}


async def test_batch_items_are_objects_within_the_batch_size_and_health_has_its_answers(client, module):
    document = await _document(client)
    operation = document["paths"]["/api/v1/batch"]["post"]
    assert operation["requestBody"]["required"] is True
    batch = operation["requestBody"]["content"]["application/json"]["schema"]
    if "$ref" in batch:
        batch = document["components"]["schemas"][batch["$ref"].rsplit("/", 1)[1]]
    invocations = batch["properties"]["invocations"]
    # Each item is checked on its own (a bad one fails alone), so the document takes any object as an item.
    assert invocations["items"]["type"] == "object"
    assert "POST /api/v1/invoke" in invocations["items"]["description"]
    assert (invocations["minItems"], invocations["maxItems"]) == (1, module.settings.max_batch_size)

    health = document["paths"]["/health"]["get"]["responses"]
    assert {"200", "503"} <= set(health)
    for status in ("200", "503"):
        reply = health[status]["content"]["application/json"]["schema"]
        assert reply["title"] == "HealthReply"
        assert {"status", "journal", "database", "lambda"} <= set(reply["properties"])


async def test_docs_work_offline_from_the_modules_own_files(client):
    page = await client.get("/docs")
    html = await page.get_data(as_text=True)

    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets, html
    # Nothing from another host: every asset is a path on this module.
    assert all(asset.startswith("/") for asset in assets), assets
    for asset in assets:
        response = await client.get(asset)
        assert response.status_code == 200, asset
        assert len(await response.get_data()) > 1000, asset
    # Only Swagger UI's own files are served from there.
    assert (await client.get("/docs/static/LICENSE")).status_code == 404
    assert (await client.get("/docs/static/..%2Fdist%2Findex.css")).status_code == 404


async def test_the_document_says_what_names_qualifiers_and_bodies_must_be(client):
    document = await _document(client)
    paths = document["paths"]
    for path in ("/api/v1/token", "/api/v1/invoke", "/api/v1/invoke-async", "/api/v1/batch"):
        assert paths[path]["post"]["requestBody"]["required"] is True, path
    [name] = [p for p in paths["/api/v1/functions/{function_name}"]["get"]["parameters"] if p["in"] == "path"]
    assert name["schema"]["maxLength"] == 140
    pattern = re.compile(name["schema"]["pattern"])
    assert pattern.search("waddlebot-echo")
    assert pattern.search("arn:aws:lambda:us-east-1:123456789012:function:waddlebot-echo")
    assert not pattern.search("waddlebot-echo:live")
    assert not pattern.search("bad name")
    invoke = paths["/api/v1/invoke"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    if "$ref" in invoke:
        invoke = document["components"]["schemas"][invoke["$ref"].rsplit("/", 1)[1]]
    assert re.compile(invoke["properties"]["version"]["pattern"]).search("12")
    assert not re.compile(invoke["properties"]["version"]["pattern"]).search("0" * 31)
    assert invoke["not"]["required"] == ["alias", "version"]
