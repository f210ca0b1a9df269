"""``GET /openapi.json``: the gateway's own API, for clients, code generators and fuzzers."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.openai.openapi import openapi_document


async def openapi_json(request: Request) -> Response:
    return JSONResponse(openapi_document())
