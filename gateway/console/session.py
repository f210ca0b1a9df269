"""``GET /console/session``: which doors the presented key opens, answered 200 for any key.

The console signs in by asking this once. Asking ``/v1/models`` and ``/admin/whoami`` instead
made every sign-in log a 401 or 404 in the browser's console (one of the two always refuses),
which looks like a fault to the person signing in. The answer says no more than those routes
do: whether the key is a gateway key, and an admin key's name and role.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import GatewayError
from gateway.state import runtime


async def console_session(request: Request) -> Response:
    rt = runtime(request)
    user = True
    try:
        rt.keys.authenticate(request.headers)
    except GatewayError:
        user = False
    admin: dict[str, str] | None = None
    try:
        who = rt.key_service.admin_keys.authorize(request.headers, write=False)
        admin = {"name": who.name, "role": who.role}
    except GatewayError:
        admin = None
    return JSONResponse({"user": user, "admin": admin}, headers={"cache-control": "no-store"})
