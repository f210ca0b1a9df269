"""``GET /admin/live``: jobs in flight and queued per account, polling, latency, failures.

Any admin key may read it (it changes nothing). Accounts are named as in the config (the
first key using a token names it), never by their upstream token.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import GatewayError
from gateway.http.common import error_response
from gateway.ops.admin import require_admin_reader
from gateway.ops.recent import AccountState
from gateway.runtime import Runtime, runtime


def account_states(rt: Runtime) -> list[AccountState]:
    """Every configured account, sorted by name, with what its poller and slots hold now."""
    pollers = {p.account: p for p in rt.hub.accounts()}
    states = []
    for token, name in sorted(rt.accounts.items(), key=lambda item: item[1]):
        poller = pollers.get(name)
        states.append(
            AccountState(
                account=name,
                jobs_in_flight=0 if poller is None else poller.jobs_in_flight,
                slots=rt.completions.slots(token),
                status_requests_per_tick=0 if poller is None else len(poller.lanes),
                breaker=rt.client.breaker(token, name),
            )
        )
    return states


async def admin_live(request: Request) -> Response:
    rt = runtime(request)
    try:
        require_admin_reader(rt, request)
    except GatewayError as error:
        return error_response(error)
    stale = 2 * rt.settings.limits.max_deadline
    return JSONResponse(rt.live.answer(account_states(rt), stale))
