"""The router reaches what Starlette's scan reaches, trying one route once a path is known."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Match, Route

from gateway.http.routing import Router


def _answer(name: str):  # type: ignore[no-untyped-def]
    async def endpoint(request: Request) -> PlainTextResponse:
        params = ",".join(f"{k}={v}" for k, v in request.path_params.items())
        return PlainTextResponse(f"{name} {params}".strip())

    return endpoint


ROUTES = [
    Route("/v1/chat", _answer("chat"), methods=["POST"]),
    Route("/v1/chat", _answer("chat-get"), methods=["GET"]),
    Route("/v1/models/{name:path}", _answer("model")),
    Route("/v1/models/fixed", _answer("shadowed")),  # a parameter route before it wins
    Route("/v1/{rest:path}", _answer("unsupported"), methods=["GET", "POST", "DELETE"]),
    Route("/api/chat", _answer("ollama"), methods=["POST"]),
]


class _Counting(Route):
    """A route that counts how often it is asked whether it matches."""

    asked = 0

    def matches(self, scope):  # type: ignore[no-untyped-def]
        type(self).asked += 1
        return super().matches(scope)


def _apps() -> tuple[Starlette, Starlette]:
    ours = Starlette()
    ours.router = Router(ROUTES)
    return Starlette(routes=ROUTES), ours


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/chat"),
        ("GET", "/v1/chat"),
        ("PUT", "/v1/chat"),  # 405 as Starlette's
        ("GET", "/v1/models/fixed"),
        ("GET", "/v1/models/a/b"),
        ("POST", "/v1/other"),
        ("PATCH", "/v1/other"),
        ("POST", "/api/chat"),
        ("GET", "/api/chat"),
        ("GET", "/api/chat/"),  # Starlette's slash redirect
        ("GET", "/nowhere"),
    ],
)
async def test_every_request_reaches_what_starlette_reaches(method: str, path: str) -> None:
    theirs, ours = _apps()
    answers = []
    for app in (theirs, ours):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            first = await client.request(method, path)
            again = await client.request(method, path)  # from what the router remembered
        answers.append([(r.status_code, r.text, r.headers.get("location")) for r in (first, again)])
    assert answers[0] == answers[1]


async def test_a_known_path_tries_one_route() -> None:
    routes = [_Counting(f"/r{n}", _answer(f"r{n}"), methods=["POST"]) for n in range(50)]
    app = Starlette()
    app.router = Router(routes)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.post("/r49")).text == "r49"
        _Counting.asked = 0
        assert (await client.post("/r49")).text == "r49"
    assert _Counting.asked == 1


def test_only_fixed_paths_are_remembered() -> None:
    router = Router(ROUTES)
    scope = {"type": "http", "path": "/v1/models/a", "method": "GET", "root_path": ""}
    assert router._first_full_match(scope) is None  # a parameter route: scanned each time
    scope = {"type": "http", "path": "/api/chat", "method": "POST", "root_path": ""}
    route = router._first_full_match(scope)
    assert route is not None and route.matches(scope)[0] is Match.FULL
