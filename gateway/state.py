"""What the app holds for its routes, read from a request: the runtime.

Kept out of ``gateway.http`` (plain ASGI plumbing that knows no runtime) and out of the
runtime itself (which knows no request): the doors import it.
"""

from __future__ import annotations

from starlette.requests import Request

from gateway.runtime import Runtime


def runtime(request: Request) -> Runtime:
    """The running gateway's :class:`Runtime`, built in the app's lifespan."""
    rt: Runtime = request.app.state.runtime
    return rt
