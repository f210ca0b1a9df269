"""Everything a running gateway owns, built in the app's lifespan and closed with it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

from gateway.auth import KeyRing, account_names
from gateway.config import CONFIG_ENV, ConfigError, KeySettings, Settings, load_settings
from gateway.db import Databases
from gateway.engine.cache import ResponseCache
from gateway.engine.catalog import ModelCatalog
from gateway.engine.service import Completions
from gateway.keys.service import KeyService
from gateway.ledger import Ledger
from gateway.limits import Limiter
from gateway.limits.limiter import TEAM_PREFIX
from gateway.ops.metrics import Metrics
from gateway.ops.recent import LiveView
from gateway.ops.shutdown import FINAL_EVENT_MARGIN
from gateway.ops.tracing import NoTracing, RequestTracing, build_tracing
from gateway.redaction import SecretRedactor, config_secrets
from gateway.upstream.batcher import SubmitBatcher
from gateway.upstream.client import JobsClient
from gateway.upstream.errors import UpstreamFailure
from gateway.upstream.poller import PollerHub
from gateway.upstream.relay import RelayFactory

admin_log = logging.getLogger("gateway.admin")
shutdown_log = logging.getLogger("gateway.shutdown")
runtime_log = logging.getLogger("gateway.runtime")

#: How long a successful upstream call keeps /readyz green without a fresh probe.
UPSTREAM_FRESH_SECONDS = 30.0
#: Upstream call outcomes that say the service could not be reached (anything else answered).
UNREACHABLE_OUTCOMES = frozenset({"connect_error", "timeout"})


@dataclass
class Runtime:
    settings: Settings
    metrics: Metrics
    catalog: ModelCatalog
    keys: KeyRing
    client: JobsClient
    hub: PollerHub
    completions: Completions
    accounts: dict[str, str]
    limiter: Limiter
    ledger: Ledger
    cache: ResponseCache
    key_service: KeyService
    shutting_down: bool = False
    #: Monotonic times of the last upstream call that got an answer / that could not get one.
    last_upstream_ok: float = field(default=0.0)
    last_upstream_down: float = field(default=0.0)
    #: Called with the new settings after a reload (the app registers new secrets with it).
    on_reload: Callable[[Settings], None] | None = None
    #: Masks the config's secrets in what the upstream says, before a client or log sees it.
    redactor: SecretRedactor = field(default_factory=SecretRedactor)
    tracing: RequestTracing = field(default_factory=NoTracing)
    #: Recent upstream calls and failures, and the completions in flight (``/admin/live``).
    live: LiveView = field(default_factory=LiveView)
    #: One pool per database URL: the ledger's, the key store's, and the doors' stores.
    databases: Databases = field(default_factory=Databases)

    @classmethod
    def build(cls, settings: Settings, base_url: str, metrics: Metrics) -> Runtime:
        named = {a.name: a.upstream_token for a in settings.accounts}
        accounts = account_names(settings.keys, named)
        holder: list[Runtime] = []

        def observe(kind: str, outcome: str, seconds: float) -> None:
            metrics.observe_upstream(kind, outcome, seconds)  # type: ignore[arg-type]
            if holder:
                holder[0].note_upstream(outcome)
                holder[0].live.observe_upstream(outcome, seconds)

        def on_tick(account: str, jobs: int, chunk_sizes: Sequence[int]) -> None:
            metrics.set_jobs_in_flight(account, jobs)
            for size in chunk_sizes:
                metrics.observe_status_ids(size)

        redactor = SecretRedactor()
        redactor.register_secrets(config_secrets(settings))
        client = JobsClient(
            settings.upstream,
            base_url,
            observer=observe,
            on_circuit_change=metrics.set_circuit_open,
            redact=redactor.redact,
        )
        relays = None
        if settings.redis.url and settings.upstream.shared_polling:
            relays = RelayFactory(
                settings.redis.url,
                settings.redis.prefix,
                client,
                settings.upstream.poll_interval,
                settings.redis.timeout,
                on_event=metrics.count_shared_polling,
            )
        hub = PollerHub(client, settings.upstream, base_url, on_tick=on_tick, relay_factory=relays)
        batcher = SubmitBatcher.from_settings(
            client, settings.upstream, on_submission=metrics.observe_submission_inputs
        )
        metrics.init_accounts(accounts.values())
        # One pool per database URL, shared by the ledger, the key store and stored responses.
        databases = Databases(
            timeout=settings.ledger.db_timeout_seconds, pool_size=settings.ledger.db_pool_size
        )
        ledger = Ledger.from_settings(
            settings.ledger,
            # An in-flight row older than any request may run was left by a process that died.
            interrupted_after=settings.limits.max_deadline + 300,
            on_drop=metrics.count_ledger_dropped,
            databases=databases,
        )
        catalog = ModelCatalog(settings.models)
        key_service = KeyService(settings, metrics, catalog.names(), databases)
        runtime = cls(
            settings=settings,
            metrics=metrics,
            catalog=catalog,
            keys=KeyRing(settings.keys, key_service.registry if key_service.enabled else None),
            client=client,
            hub=hub,
            completions=Completions(settings, client, hub, batcher, metrics.observe_slot_wait),
            accounts=accounts,
            limiter=Limiter.from_settings(settings, on_degraded=metrics.set_limits_degraded),
            ledger=ledger,
            redactor=redactor,
            cache=ResponseCache.from_settings(settings, on_event=metrics.observe_cache),
            key_service=key_service,
            tracing=build_tracing(settings.tracing, settings.logging.log_prompts),
            databases=databases,
        )
        holder.append(runtime)
        return runtime

    def account(self, key: KeySettings) -> str:
        return self.accounts.get(key.upstream_token, key.name)

    def note_upstream(self, outcome: str) -> None:
        """Remember whether the last upstream call got through, for /readyz."""
        if outcome in UNREACHABLE_OUTCOMES:
            self.last_upstream_down = time.monotonic()
        elif outcome in ("ok", "rejected"):
            self.last_upstream_ok = time.monotonic()

    def reload(self) -> dict[str, int]:
        """Re-read the config file for keys and models; requests in flight keep what they had."""
        if not os.environ.get(CONFIG_ENV):
            raise ConfigError(f"no config file to reload (${CONFIG_ENV} is not set)")
        fresh = load_settings()
        before = {k.name for k in self.settings.keys}
        after = {k.name for k in fresh.keys}
        catalog = ModelCatalog(fresh.models) if fresh.models else self.catalog
        self.key_service.check_names(fresh.keys)
        self.settings = self.settings.model_copy(
            update={"keys": fresh.keys, "models": catalog.models}
        )
        self.keys = KeyRing(fresh.keys, self.keys.registry)
        self.catalog = catalog
        named = {a.name: a.upstream_token for a in self.settings.accounts}
        self.accounts = account_names(fresh.keys, named)
        self.metrics.init_accounts(self.accounts.values())
        self.redactor.register_secrets(config_secrets(self.settings))
        if self.on_reload is not None:
            self.on_reload(self.settings)
        changes = {"keys": len(after), "added": len(after - before), "removed": len(before - after)}
        admin_log.info("config reloaded: %s", changes)
        return changes

    async def start(self) -> None:
        await self.ledger.start()
        await self.key_service.start()  # before runs are resumed: their keys must be known
        await self._say_if_redis_is_unreachable()
        await self._reconcile_budgets()

    async def _say_if_redis_is_unreachable(self) -> None:
        """A typo in ``redis.url`` is one line at start-up, not a surprise at the first request."""
        if not self.settings.redis.url or getattr(self.limiter.store, "ping", None) is None:
            return
        if not await self._redis_reachable():
            url = urlsplit(self.settings.redis.url)
            where = f"{url.scheme}://{url.hostname}:{url.port or 6379}{url.path}"
            runtime_log.warning(
                "redis.url %s does not answer at start-up: check it; until it answers, "
                "limits fail %s (redis.failure_policy)",
                where,
                self.settings.redis.failure_policy,
            )

    async def _reconcile_budgets(self) -> None:
        """Daily and monthly budget counters of keys and teams (Redis or memory) follow the
        ledger at start-up: after a crash they held charges for requests whose rows say
        otherwise, or nothing."""
        registry = self.key_service.registry
        keys = [*self.settings.keys]
        keys += [k for n in registry.names_after(None) if (k := registry.settings(n)) is not None]
        teams = [t for t in registry.teams() if t.daily_tokens or t.monthly_tokens]
        budgets = [(k.name, bool(k.daily_tokens), bool(k.monthly_tokens)) for k in keys]
        budgets += [
            (TEAM_PREFIX + t.name, bool(t.daily_tokens), bool(t.monthly_tokens)) for t in teams
        ]
        budgets = [b for b in budgets if b[1] or b[2]]
        if not budgets:
            return
        now = datetime.now(UTC)
        day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        cached = self.settings.cache.count_in_budget
        try:
            async with asyncio.timeout(10.0):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.ledger.flush(), 3.0)  # rows replayed from a spill
                month = await self.ledger.budget_usage(day_start.replace(day=1), cached=cached)
                day = await self.ledger.budget_usage(day_start, cached=cached)
                for usage in (day, month):  # a team's budget counts all its keys' tokens
                    for key in keys:
                        if key.team and key.name in usage:
                            team = TEAM_PREFIX + key.team
                            usage[team] = usage.get(team, 0) + usage[key.name]
                await self.limiter.reconcile(budgets, day, month, now.timestamp())
        except Exception as exc:  # never fatal: the counters then stay as they were
            runtime_log.warning(
                "budgets not reconciled with the ledger: %s: %s", type(exc).__name__, exc
            )

    def begin_drain(self) -> None:
        """Shutdown began: unready now; requests still running near the grace end are cut."""
        self.shutting_down = True
        grace = self.settings.server.graceful_shutdown_seconds
        self.completions.begin_drain(max(0.0, grace - FINAL_EVENT_MARGIN))
        shutdown_log.warning("shutting down: draining requests for up to %g s", grace)

    async def readiness(self) -> dict[str, bool]:
        """Config loaded, upstream reached recently (probed if not, or if the last call to it
        could not connect), Redis and the database reachable when configured, not draining.

        While the client finds the service down (a circuit open, or every recent call failed:
        a 503 answers but does no work) a recent success does not count: the tokens of open
        circuits are probed, which is refused at once until a circuit half-opens, and then is
        its probe (so an idle replica taken out of the load balancer still comes back).
        """
        checks = {"config": True, "accepting": not self.shutting_down}
        down = self.client.unavailable
        upstream_ok = (
            not down
            and time.monotonic() - self.last_upstream_ok < UPSTREAM_FRESH_SECONDS
            and self.last_upstream_ok > self.last_upstream_down
        )
        if not upstream_ok and self.accounts:
            tokens = self.client.open_circuits() or [next(iter(self.accounts))]
            upstream_ok = all([await self._probe_upstream(token) for token in tokens])
            # The client may count a call cut short by the timeout as answered: decide here.
            if upstream_ok:
                self.last_upstream_ok = time.monotonic()
            else:
                self.last_upstream_down = time.monotonic()
        checks["upstream"] = upstream_ok
        return await self._redis_check(checks)

    async def _probe_upstream(self, token: str) -> bool:
        try:
            async with asyncio.timeout(2.0):
                await self.client.status(token, ["0" * 32])
        except UpstreamFailure as failure:  # any deliberate answer means it is reachable
            return failure.kind == "rejected" or (
                failure.kind == "http_error" and (failure.status_code or 500) < 500
            )
        except TimeoutError:
            return False
        return True

    async def _redis_check(self, checks: dict[str, bool]) -> dict[str, bool]:
        # Redis counts only when its outage refuses requests (policy "closed"): with "open" the
        # replicas keep serving, and taking them all out of the load balancer would defeat it.
        if self.settings.redis.url and self.settings.redis.failure_policy == "closed":
            checks["redis"] = not self.limiter.degraded and await self._redis_reachable()
        return checks

    async def dependencies(self) -> dict[str, bool]:
        """Reported by /readyz without deciding readiness: they never fail a request."""
        info: dict[str, bool] = {"ledger": self.ledger.healthy}
        if self.key_service.enabled:
            info["keys_db"] = self.key_service.healthy
        if self.settings.redis.url and self.settings.redis.failure_policy == "open":
            info["redis"] = not self.limiter.degraded and await self._redis_reachable()
        return info

    async def _redis_reachable(self) -> bool:
        ping = getattr(self.limiter.store, "ping", None)
        if ping is None:
            return True
        try:
            await ping()
        except Exception:
            return False
        return True

    async def aclose(self) -> None:
        await self.completions.batcher.aclose()
        await self.cache.aclose()
        await self.hub.aclose()
        await self.client.aclose()
        await self.limiter.close()
        await self.ledger.stop()
        await self.key_service.aclose()
        await asyncio.to_thread(self.tracing.close)  # the exporter's last batch, off the loop
