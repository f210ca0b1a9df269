"""The one charging rule: what a request is charged, whatever ended it. Pure.

The upstream has no cancel: once a job is submitted it runs to its end on the grid, whether
the client is still there or not. So a request is charged what its jobs produced, and, while
a job may still be running (the client left, its own deadline cut it, a background run was
cancelled, the gateway shut down), at least what admission estimated. A job that ended
(complete, or failed upstream) is charged what it produced, no more.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.config import LimitSettings
from gateway.engine.choices import ChoiceState
from gateway.engine.planning import Plan
from gateway.errors import DeadlineExceeded, ServiceUnavailable
from gateway.http.exchange import Exchange


def estimate(plan: Plan, limits: LimitSettings) -> int:
    """Tokens charged at admission; corrected to the real count when the answer ends."""
    per_choice = plan.max_tokens or limits.completion_estimate
    return plan.prompt_tokens + per_choice * plan.n_choices


def completion_tokens(choices: Sequence[ChoiceState]) -> int:
    return sum(c.completion_tokens for c in choices)


def settle(exchange: Exchange, choices: Sequence[ChoiceState]) -> None:
    """Copy what the choices counted into the request's record."""
    exchange.completion_tokens = completion_tokens(choices)
    exchange.log_rewrites = sum(c.cursor.rewrites for c in choices)
    asked_again = [j for c in choices for j in c.job_ids[1:] if j not in exchange.job_ids]
    if asked_again:
        exchange.job_ids = [*exchange.job_ids, *asked_again]


def may_still_run(error: BaseException | None) -> bool:
    """Whether the jobs of a request that ended with ``error`` may still be running upstream:
    no error (the client left, the run was cancelled), its deadline, the gateway's shutdown."""
    return error is None or isinstance(error, DeadlineExceeded) or cut_by_shutdown(error)


def cut_by_shutdown(error: BaseException) -> bool:
    """Whether ``error`` is a shutdown's drain cutting a run (its jobs run on: hand it over)."""
    return isinstance(error, ServiceUnavailable) and error.code == "server_shutdown"


def charge(
    exchange: Exchange,
    plan: Plan,
    choices: Sequence[ChoiceState],
    estimate_tokens: int,
    error: BaseException | None = None,
) -> None:
    """The request's tokens, by the rule above, into its record (limits, budgets, metrics
    and the ledger row all read them from there)."""
    settle(exchange, choices)
    if exchange.cached or not choices or all(choice.done for choice in choices):
        return  # a replayed answer runs no job; a complete one is charged what it produced
    if may_still_run(error):
        estimated_completion = max(0, estimate_tokens - plan.prompt_tokens)
        exchange.completion_tokens = max(exchange.completion_tokens, estimated_completion)


def abandon(
    exchange: Exchange, plan: Plan, choices: Sequence[ChoiceState], estimate_tokens: int
) -> None:
    """The client left before every choice ended: charged by the rule, outcome ``abandoned``
    (status 499). A complete answer that only lost its last bytes stays as it was."""
    charge(exchange, plan, choices, estimate_tokens)
    if not exchange.cached and not all(choice.done for choice in choices):
        exchange.status, exchange.outcome = 499, "abandoned"
