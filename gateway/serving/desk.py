"""The front desk: every request, live or background, admitted, charged and finished one way.

A door (HTTP or not) hands the desk plain values: a :class:`Call` (the key, the route, the
request id, the cache flags) and the engine's :class:`Plan`. :meth:`FrontDesk.open` then does
every step in one order, for every kind of request:

1. cache policy from the call's booleans; the entry is the upstream account's (``cache.scope``);
2. admission: the key's and its team's limits (``limiter.admit(..., team=...)``), charged the
   plan's estimate (nothing for a free cache hit);
3. submission, or a replay of the cached answer: the account's job cap, waited for with the
   key's fair share; identical requests of the same account join one job;
4. a :class:`Run`: the answer's events, and what ends it. Whatever ends it, the one charging
   rule (:mod:`gateway.serving.charging`) decides the tokens; :meth:`Run.finish` writes the
   metrics, the ledger row and the access line (:mod:`gateway.serving.finish`).

A caller with no client to stream to (a batch line) uses :meth:`FrontDesk.answer`: one call,
the whole answer back. A background run resumed after a restart uses :meth:`FrontDesk.resume`
(already admitted by the gateway that started it); requests that run no job (counting tokens,
following a stored response) use :meth:`FrontDesk.hold`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, cast

from gateway.config import KeySettings, ModelSettings
from gateway.engine.answer import Answer
from gateway.engine.cache import ReplayedChoice, cache_key, replay
from gateway.engine.catalog import ModelCatalog, allows
from gateway.engine.choices import ChoiceState
from gateway.engine.events import Event
from gateway.engine.planning import Plan
from gateway.engine.service import Submitted
from gateway.errors import GatewayError, NotFound, RateLimited
from gateway.http.exchange import Exchange
from gateway.limits.limiter import Admission, TeamLimits
from gateway.serving.answers import collect
from gateway.serving.charging import charge, completion_tokens, cut_by_shutdown, estimate
from gateway.serving.finish import begin, finish

if TYPE_CHECKING:
    from gateway.runtime import Runtime


@dataclass(frozen=True, slots=True)
class Call:
    """One request as the desk takes it: plain values, whichever door it came through."""

    key: KeySettings
    route: str
    request_id: str
    #: ``Cache-Control: no-cache`` (do not read the cache) and ``no-store`` (do not store).
    no_cache: bool = False
    no_store: bool = False
    #: Longest silence before a keep-alive event (None: ``limits.keepalive_interval``).
    keepalive: float | None = None
    #: Seconds the run may take (None: the plan's own deadline).
    timeout: float | None = None
    trace_headers: Mapping[str, str] = field(default_factory=dict)
    #: Called once admitted, before any job is submitted (a background run stores its row
    #: then: a row lost after submitting would be a lost answer).
    on_admitted: Callable[[], Awaitable[None]] | None = field(default=None, compare=False)
    #: A line of a batch: its job slots are taken in the batch class (below live requests).
    batch: bool = False
    #: Called with the job ids once submitted, before they are followed (a batch line stores
    #: them: a restarted gateway follows them instead of submitting the line again). It
    #: must not raise.
    on_submitted: Callable[[Sequence[str]], Awaitable[None]] | None = field(
        default=None, compare=False
    )


class Run:
    """An admitted request's answer in the making.

    Follow :attr:`events` (or :meth:`collect`); then :meth:`end` charges the tokens by the
    one rule, and :meth:`finish` releases what the request holds and writes its record.
    """

    def __init__(
        self,
        desk: FrontDesk,
        plan: Plan,
        exchange: Exchange,
        estimate_tokens: int,
        headers: dict[str, str],
    ) -> None:
        self.desk = desk
        self.plan = plan
        self.exchange = exchange
        self.estimate = estimate_tokens
        self.headers = headers
        self.choices: Sequence[ChoiceState] = []
        self.events: AsyncIterator[Event] = _nothing()
        #: True when the run was left to another gateway: its tokens are that one's to record.
        self.handed_over = False
        self.free = False  # a cache hit that counts in no budget

    @property
    def cached(self) -> bool:
        return self.exchange.cached

    def charged(self) -> int:
        """The tokens the limits and budgets keep for this run, once it ended."""
        if self.free:
            return 0
        if self.handed_over:  # in flight elsewhere: the estimate, corrected by whoever ends it
            return self.estimate
        return self.exchange.prompt_tokens + self.exchange.completion_tokens

    def end(self, error: BaseException | None = None, outcome: str | None = None) -> None:
        """The run ended (``error`` None: completed, or cut by the client or a cancel, with
        ``outcome`` saying which): charge it by the rule, record its status."""
        charge(self.exchange, self.plan, self.choices, self.estimate, error)
        if isinstance(error, GatewayError):
            self.exchange.status, self.exchange.outcome = error.status_code, error.code or "error"
        elif outcome is not None and not all(c.done for c in self.choices):
            self.exchange.status, self.exchange.outcome = 499, outcome

    def hand_over(self) -> None:
        """Leave the run to the next gateway (shutdown): the limits keep its estimate; the
        gateway that finishes it records the whole usage, so this record carries none."""
        self.end(None)
        self.handed_over = True
        self.exchange.status, self.exchange.outcome = 503, "handed_over"
        self.exchange.prompt_tokens = self.exchange.completion_tokens = 0

    async def collect(self) -> Answer:
        """The whole answer (every choice ended), charged; a failure is raised, charged."""
        return await collect(self.plan, self.choices, self.events, self.exchange, self.estimate)

    async def release(self) -> None:
        """Let go of the concurrency slot and job slots (before an answer's last bytes)."""
        await self.exchange.release()

    async def finish(self) -> None:
        await self.desk.finish(self.exchange)


async def _nothing() -> AsyncIterator[Event]:
    return
    yield  # an async generator with no events


class FrontDesk:
    """The lifecycle of every request, over a running gateway's parts (cheap to make)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    # ------------------------------------------------------------------ who may ask what

    def team(self, key: KeySettings) -> TeamLimits | None:
        return self.rt.key_service.team_limits(key)

    def catalog(self, key: KeySettings) -> ModelCatalog:
        """The models as ``key`` sees them (its own list, its team's): a model it may not use
        does not exist (a 404 like an unknown one)."""
        view = self.rt.catalog.for_key(key.models)
        team = self.team(key)
        return view.narrowed(team.models) if team is not None else view

    def exchange(self, call: Call) -> Exchange:
        exchange = Exchange(call.request_id, call.route)
        exchange.key_name = call.key.name
        exchange.trace_headers = dict(call.trace_headers)
        return exchange

    # ------------------------------------------------------------------ the one way in

    async def open(self, call: Call, plan: Plan, exchange: Exchange | None = None) -> Run:
        """Admit ``plan`` for ``call`` and start it (submit its jobs, or replay a cached
        answer). A refusal is recorded (the exchange is finished) and raised."""
        exchange = exchange or self.exchange(call)
        self.describe(exchange, plan)
        try:
            return await self._open(call, plan, exchange)
        except GatewayError as error:
            await self.refuse(exchange, error)
            raise

    async def answer(self, call: Call, plan: Plan, resume: Sequence[str] = ()) -> Answer:
        """One whole answer, for a caller with no client to stream to (a batch line): the
        request is admitted, run, charged and recorded like any other; a refusal or a
        failure is raised (already recorded). With ``resume`` (job ids a gateway submitted
        before it stopped) those jobs are followed instead (see :meth:`resume`).

        Cut by a shutdown (or cancelled) once its jobs were submitted, the run is handed over
        (:meth:`Run.hand_over`): the gateway that follows its jobs to the end charges it."""
        run = self.resume(call, plan, resume) if resume else await self.open(call, plan)
        try:
            return await run.collect()
        except GatewayError as error:
            if cut_by_shutdown(error) and run.exchange.job_ids:
                run.hand_over()
            else:
                run.end(error)
            raise
        except asyncio.CancelledError:
            if run.exchange.job_ids:
                run.hand_over()
            raise
        finally:
            await run.finish()

    async def _open(self, call: Call, plan: Plan, exchange: Exchange) -> Run:
        rt, key = self.rt, call.key
        settings = rt.settings
        account = rt.account(key)
        policy = rt.cache.policy(key, plan.model, no_cache=call.no_cache, no_store=call.no_store)
        entry = rt.cache.entry_key(plan, account) if policy.active else None
        cached = await rt.cache.lookup(entry) if entry is not None and policy.read else None
        # A hit counts in the key's request limits; its tokens only where the operator says.
        free = cached is not None and not settings.cache.count_in_budget
        estimated = estimate(plan, settings.limits)
        admission = await rt.limiter.admit(
            key, plan.model.name, 0 if free else estimated, aliases=plan.model.aliases,
            team=self.team(key),
        )  # fmt: skip
        headers = dict(admission.headers)
        # Only once admitted: a refused request must not learn what is cached.
        headers["x-gateway-cache"] = "hit" if cached else "miss" if policy.read else "bypass"
        exchange.mark("admitted")
        # The ledger's in-flight row: a process that dies before the finish still leaves one.
        begin(rt, exchange, 0 if free else estimated)
        run = Run(self, plan, exchange, estimated, headers)
        run.free = free
        exchange.cleanups.append(_releasing(admission, run))
        if cached is not None:  # answered as a live answer would be: at once
            exchange.cached = True
            exchange.tokens_saved = cached.prompt_tokens + cached.completion_tokens
            exchange.jobs_saved = len(cached.choices)
            run.choices = cast(list[ChoiceState], ReplayedChoice.of(cached))
            run.events = replay(cached)
            return run
        if call.on_admitted is not None:
            await call.on_admitted()
        deadline = asyncio.get_running_loop().time() + (call.timeout or plan.timeout)
        shared = entry is not None and settings.cache.share_jobs
        fair = rt.key_service.share(key)
        jobs = await rt.completions.submit(
            key,
            account,
            plan,
            deadline,
            # Jobs are shared only within the upstream account that runs and bills them.
            share=cache_key(plan, account) if shared else None,
            fair=replace(fair, batch=True) if call.batch else fair,
            on_slot=lambda: exchange.mark("slot"),
        )
        self._follow(call, run, jobs, deadline)
        if call.on_submitted is not None:
            await call.on_submitted(jobs.ids)
        if entry is not None and policy.store:
            choices = run.choices
            run.events = rt.cache.recording(
                run.events,
                entry,
                plan.n_choices,
                plan.prompt_tokens,
                lambda: completion_tokens(choices),
            )
        return run

    def resume(self, call: Call, plan: Plan, job_ids: Sequence[str]) -> Run:
        """Follow the jobs of a run another gateway admitted and submitted (a background run
        after a restart or a hand-over). Its key's limits already hold the estimate; when it
        ends they are corrected to what it cost, and its record carries the whole usage."""
        rt, key = self.rt, call.key
        exchange = self.exchange(call)
        exchange.resumed = True  # its in-flight row, if any, is the stopped process's
        self.describe(exchange, plan)
        run = Run(self, plan, exchange, estimate(plan, rt.settings.limits), {})
        team = self.team(key)

        async def correct(_: Exchange) -> None:
            await rt.limiter.charge(key, run.charged() - run.estimate, team=team)

        exchange.cleanups.append(correct)
        token = key.upstream_token
        jobs = Submitted(
            list(job_ids),
            rt.hub.poller(token, rt.account(key)),
            rt.completions.slots(token),
            released=True,  # its job slots were held by the gateway that submitted it
            token=token,
        )
        deadline = asyncio.get_running_loop().time() + (call.timeout or plan.timeout)
        self._follow(call, run, jobs, deadline)
        return run

    def _follow(self, call: Call, run: Run, jobs: Submitted, deadline: float) -> None:
        """The choices of submitted (or joined) jobs and the events of following them."""
        rt, exchange, plan = self.rt, run.exchange, run.plan
        exchange.job_ids = list(jobs.ids)
        rt.live.following(exchange)
        if jobs.shared:
            rt.cache.count_join()
            exchange.jobs_saved = len(jobs.ids)

        async def release_jobs(_: Exchange) -> None:
            jobs.release()

        exchange.cleanups.append(release_jobs)
        exchange.submitted_at = time.perf_counter()
        exchange.marks["submitted"] = exchange.submitted_at
        run.headers["x-job-id"] = ",".join(jobs.ids)
        strip = rt.settings.upstream.strip_ansi
        run.choices = [ChoiceState(i, job, plan, strip) for i, job in enumerate(jobs.ids)]
        keepalive = call.keepalive or rt.settings.limits.keepalive_interval
        run.events = rt.completions.events(
            plan, jobs, deadline, list(run.choices), keepalive=keepalive
        )

    # ------------------------------------------------------------------ requests with no job

    async def hold(self, call: Call, model: ModelSettings, exchange: Exchange) -> Admission:
        """Admit a request that runs no job (counting tokens, following a stored response):
        it counts as one request of its key (and team) with 0 tokens, and holds a place in
        their concurrency limits until the admission is released."""
        exchange.model = model.name
        admission = await self.rt.limiter.admit(
            call.key, model.name, 0, aliases=model.aliases, team=self.team(call.key)
        )
        exchange.mark("admitted")
        return admission

    # ------------------------------------------------------------------ the record

    def describe(self, exchange: Exchange, plan: Plan) -> None:
        exchange.mark("planned")
        exchange.model = plan.model.name
        exchange.stream = plan.stream
        exchange.prompt_tokens = plan.prompt_tokens
        exchange.ignored = plan.ignored
        logging = self.rt.settings
        if logging.logging.log_prompts or logging.ledger.log_prompts:
            exchange.prompt_text = "\n\n".join(dict.fromkeys(plan.prompts))

    async def refuse(
        self, exchange: Exchange, error: GatewayError, asked_model: object = None
    ) -> None:
        """A request that ran no job: its status and outcome, no tokens, recorded."""
        rt = self.rt
        if isinstance(error, RateLimited) and exchange.key_name:
            rt.metrics.count_rate_limited(exchange.key_name, error.code or "rate_limited")
        exchange.status, exchange.outcome = error.status_code, error.code or "error"
        if isinstance(error, NotFound) and error.param == "model" and exchange.key_name:
            self._note_disallowed(exchange, asked_model)
        exchange.prompt_tokens = 0  # no job ran: the ledger and the limits count nothing
        await self.finish(exchange)

    def _note_disallowed(self, exchange: Exchange, name: object) -> None:
        """A model the key may not use got the same 404 as an unknown one; the operator's
        ledger and log still say which model it was and why (``model_not_allowed``)."""
        if not isinstance(name, str) or exchange.key_name is None:
            return
        try:
            model = self.rt.catalog.resolve(name)
        except NotFound:
            return  # unknown: nothing a client typed becomes a metric label or a ledger model
        key = self.rt.keys.by_name(exchange.key_name)
        team = self.team(key) if key is not None else None
        lists = (key.models if key else None, team.models if team else None)
        if not all(allows(allowed, model) for allowed in lists):
            exchange.model, exchange.outcome = model.name, "model_not_allowed"

    async def finish(self, exchange: Exchange) -> None:
        """Release what is held; metrics, the ledger row and the access line."""
        await finish(self.rt, exchange)


def _releasing(admission: Admission, run: Run) -> Callable[[Exchange], Awaitable[None]]:
    async def release(_: Exchange) -> None:
        await admission.release(run.charged())

    return release
