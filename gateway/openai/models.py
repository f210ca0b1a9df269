"""``GET /v1/models`` and ``GET /v1/models/{model}``, from the config."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.config import ModelSettings
from gateway.engine.catalog import is_pattern
from gateway.errors import GatewayError
from gateway.http.common import error_response
from gateway.serving.desk import FrontDesk
from gateway.state import runtime

_CREATED = 1_714_953_600  # a fixed date: the config has no creation times, answers stay stable


def _model_object(name: str, model: ModelSettings) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": _CREATED, "owned_by": model.owned_by}


async def list_models(request: Request) -> Response:
    rt = runtime(request)
    try:
        key = rt.keys.authenticate(request.headers)
    except GatewayError as error:
        return error_response(error)
    data = [
        _model_object(name, model)
        for model in FrontDesk(rt).catalog(key).models
        for name in (model.name, *model.aliases)
        if not is_pattern(name)  # a glob alias is not a name to list
    ]
    return JSONResponse({"object": "list", "data": data})


async def get_model(request: Request) -> Response:
    rt = runtime(request)
    try:
        key = rt.keys.authenticate(request.headers)
        name = request.path_params["model"]
        model = FrontDesk(rt).catalog(key).resolve(name)
    except GatewayError as error:
        return error_response(error)
    return JSONResponse(_model_object(name, model))
