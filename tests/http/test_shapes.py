"""Each door's error shape, chosen by path, for answers written before any route runs."""

from __future__ import annotations

import json
import pickle
from typing import Any

from gateway.anthropic.errors import error_shape as anthropic_shape
from gateway.app import error_shapes
from gateway.errors import BadRequest, GatewayError, HeadersTooLarge, ServiceUnavailable
from gateway.http.connections import raw_response
from gateway.http.shapes import ErrorShapes


def ollama_shape(error: GatewayError) -> tuple[int, Any]:
    return error.status_code, {"error": error.message}


def _body(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    parsed: dict[str, Any] = json.loads(body)
    return status, parsed


def test_paths_no_door_claims_answer_in_openais_shape() -> None:
    status, body = _body(raw_response(HeadersTooLarge("big"), error_shapes(), "/v1/models"))
    assert status == 431
    assert body == {
        "error": {
            "message": "big",
            "type": "invalid_request_error",
            "param": None,
            "code": "request_headers_too_large",
        }
    }


def test_the_messages_paths_answer_in_anthropics_shape_and_status_table() -> None:
    shapes = error_shapes()
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        status, body = _body(raw_response(HeadersTooLarge("big"), shapes, path))
        assert (status, body) == (
            431,
            {"type": "error", "error": {"type": "invalid_request_error", "message": "big"}},
        )
    # A busy gateway is Anthropic's 529 overloaded_error, which the SDKs retry.
    status, body = _body(raw_response(ServiceUnavailable("busy"), shapes, "/v1/messages"))
    assert status == 529 and body["error"]["type"] == "overloaded_error"


def test_a_new_door_registers_its_own_shape_and_the_longest_prefix_wins() -> None:
    shapes = (
        ErrorShapes()
        .with_door("/api/", ollama_shape)
        .with_door("/v1/messages", anthropic_shape)
        .with_door("/api/special/", anthropic_shape)
    )
    assert shapes.render(BadRequest("no"), "/api/chat") == (400, b'{"error": "no"}')
    assert shapes.shape("/api/special/x") is anthropic_shape
    assert shapes.shape("/v1/chat/completions") is shapes.default
    assert shapes.shape("") is shapes.default  # a connection refused before its path


def test_the_registry_pickles_into_uvicorns_workers() -> None:
    shapes = error_shapes()
    copy = pickle.loads(pickle.dumps(shapes))
    assert copy.render(BadRequest("x"), "/v1/messages") == shapes.render(
        BadRequest("x"), "/v1/messages"
    )
