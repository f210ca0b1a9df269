"""The served OpenAPI document describes every route of the app, and tools can load it."""

from __future__ import annotations

import re

import pytest
from starlette.routing import Route

from gateway.app import create_app, openapi_document
from gateway.config import Settings

#: Unsupported OpenAI endpoints and unknown Messages paths: refused with 404s.
CATCH_ALLS = ("/v1/{rest:path}", "/v1/messages{rest:path}", "/api{rest:path}")


def test_every_route_is_documented_and_nothing_else() -> None:
    app = create_app(Settings())
    served = {
        (re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path), method.lower())
        for route in app.routes
        if isinstance(route, Route) and route.path not in CATCH_ALLS
        for method in route.methods or ()
        if method != "HEAD"
    }
    documented = {
        (path, method) for path, item in openapi_document()["paths"].items() for method in item
    }
    assert served == documented


def test_schemathesis_loads_every_operation() -> None:
    schemathesis = pytest.importorskip("schemathesis", reason="a [test] dependency")
    from schemathesis.core.result import Ok

    schema = schemathesis.openapi.from_dict(openapi_document())
    results = list(schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in results)
    labels = {result.ok().label for result in results if isinstance(result, Ok)}
    assert "POST /v1/chat/completions" in labels and "POST /v1/messages" in labels
    # 14 + 7 Responses + 13 admin + console file and session + /admin/live + 6 Ollama
    # + 9 files and batches + 6 Message Batches + 3 admin batch routes
    assert len(labels) == 61


def test_every_error_answer_uses_its_doors_shape() -> None:
    doc = openapi_document()
    error = doc["components"]["schemas"]["Error"]
    assert error["properties"]["error"]["required"] == ["message", "type", "param", "code"]
    anthropic = doc["components"]["schemas"]["AnthropicError"]
    assert anthropic["properties"]["error"]["required"] == ["type", "message"]
    checked = 0
    for path, item in doc["paths"].items():
        for operation in item.values():
            for status, answer in operation["responses"].items():
                if status[0] in "45" and path != "/readyz":  # readiness answers its checks
                    schema = answer["content"]["application/json"]["schema"]
                    shape = (
                        "AnthropicError"
                        if path.startswith("/v1/messages")
                        else "OllamaError"
                        if path.startswith("/api/")
                        else "Error"
                    )
                    assert schema == {"$ref": f"#/components/schemas/{shape}"}, (path, status)
                    checked += 1
    assert checked > 20
