"""The keys part of a running gateway: registry, watcher, admin operations, admin keys.

Built with the runtime and closed with it. Requests see only :attr:`KeyService.registry`
(in memory); the database is read by the watcher and written by admin operations.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.config import ConfigError, KeySettings, Settings
from gateway.db import Databases
from gateway.keys.access import AdminKeys
from gateway.keys.admin import KeyAdmin
from gateway.keys.model import KeyRecord, TeamRecord
from gateway.keys.registry import KeyRegistry
from gateway.keys.store import KeyStore
from gateway.keys.watcher import KeyWatcher
from gateway.limits.limiter import TeamLimits
from gateway.limits.state import Quota
from gateway.ops.metrics import Metrics
from gateway.upstream.slots import Share


def open_store(settings: Settings, databases: Databases | None = None) -> KeyStore:
    """The key tables in the database of ``ledger.url`` (not yet opened)."""
    databases = databases or Databases(timeout=settings.ledger.db_timeout_seconds)
    return KeyStore(databases.get(settings.ledger.url), settings.key_store.table_prefix)


class KeyService:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        model_names: Iterable[str],
        databases: Databases | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.admin_keys = AdminKeys(settings.admin.all_keys())
        self.enabled = settings.key_store.enabled
        self.registry = KeyRegistry(
            {a.name: a.upstream_token for a in settings.accounts},
            secret=settings.key_store.secret,
            config_names=(k.name for k in settings.keys),
        )
        store = open_store(settings, databases)
        url = settings.ledger.url
        self.watcher = KeyWatcher(
            store,
            self.registry,
            poll_seconds=settings.key_store.poll_seconds,
            redis_url=settings.redis.url,
            redis_prefix=settings.redis.prefix,
            postgres_url=url if url.startswith(("postgresql://", "postgres://")) else None,
            on_health=self._health,
        )
        self.admin = KeyAdmin(settings, store, model_names=model_names, on_change=self._changed)

    async def ensure_open(self) -> None:
        """Open the key tables now if the watcher has not yet (the database was down)."""
        await self.watcher.open()

    def _health(self, up: bool) -> None:
        self.metrics.set_keys_store(up, len(self.registry))

    async def _changed(self, record: KeyRecord | TeamRecord) -> None:
        """Apply our own change at once, then tell the other replicas."""
        if isinstance(record, KeyRecord):
            self.registry.put_key(record)
        else:
            self.registry.put_team(record)
        await self.watcher.announce()

    async def start(self) -> None:
        if not self.enabled:
            return
        await self.watcher.start()
        self.check_names()

    def check_names(self, config_keys: Iterable[KeySettings] | None = None) -> None:
        """A name in both the config and the database is an error, naming it."""
        if config_keys is not None:
            names = frozenset(k.name for k in config_keys)
            clash = sorted(names & {n for n in self.registry.names_after(None)})
            if clash:
                raise ConfigError(_clash_message(clash))
            self.registry.config_names = names
            self.admin.config_names = names
            return
        clash = self.registry.collisions()
        if clash:
            raise ConfigError(_clash_message(clash))

    def team_limits(self, key: KeySettings) -> TeamLimits | None:
        team = self.registry.team(key.team)
        if team is None:
            return None
        quota = Quota(
            rpm=team.rpm,
            tpm=team.tpm,
            daily_tokens=team.daily_tokens,
            monthly_tokens=team.monthly_tokens,
            max_concurrent=team.max_concurrent,
        )
        return TeamLimits(team.name, quota, team.models)

    def share(self, key: KeySettings) -> Share:
        """How ``key`` waits for its account's job cap (see :mod:`gateway.upstream.slots`)."""
        team = self.registry.team(key.team)
        priority = key.priority or (team.priority if team is not None else 0)
        return Share(
            key=key.name,
            team=key.team,
            weight=key.weight,
            team_weight=team.weight if team is not None else 1.0,
            priority=priority,
        )

    @property
    def healthy(self) -> bool:
        return not self.enabled or self.watcher.healthy

    async def aclose(self) -> None:
        await self.watcher.aclose()


def _clash_message(names: list[str]) -> str:
    return (
        "key name(s) used by both the config and the database: "
        + ", ".join(repr(n) for n in names)
        + " (rename or remove one of each)"
    )
