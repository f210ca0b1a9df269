"""``GET /admin/live``: jobs in flight and queued per account, polling, latency, failures.

Any admin key may read it (it changes nothing). Accounts are named as in the config (the
first key using a token names it), never by their upstream token. With several workers the
answer covers all of them (``gateway.ops.live_share``), whichever one answers.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.admin.usage import require_admin_reader
from gateway.errors import GatewayError
from gateway.http.common import error_response
from gateway.ops.recent import AccountState
from gateway.runtime import Runtime
from gateway.state import runtime


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


def _stale_after(rt: Runtime) -> float:
    """A request listed longer than this never reached ``finish``: drop it from the view."""
    return 2 * rt.settings.limits.max_deadline


def live_snapshot(rt: Runtime) -> dict[str, Any]:
    """This worker's view, as shared with the other workers of the server."""
    return rt.live.share(account_states(rt), _stale_after(rt))


async def admin_live(request: Request) -> Response:
    rt = runtime(request)
    try:
        require_admin_reader(rt, request)
    except GatewayError as error:
        return error_response(error)
    share = getattr(request.app.state, "live_share", None)
    others = share.others if share is not None else ()
    return JSONResponse(rt.live.answer(account_states(rt), _stale_after(rt), others))
