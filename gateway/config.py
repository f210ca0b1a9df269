"""Settings: one YAML file, ``${ENV}`` interpolation, validated once at start-up.

This module is the only reader of the environment. Everything else receives a frozen
:class:`Settings` object, so a bad field is reported before the gateway serves anything.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.config_batches import BatchSettings, FileSettings
from gateway.config_env import ConfigError as ConfigError
from gateway.config_env import interpolate as interpolate
from gateway.config_env import interpolate_tree
from gateway.config_errors import (
    OTEL_INSTALL,
    OTEL_MODULES,
    format_validation_error,
    missing_modules,
    repeated,
)
from gateway.config_ollama import ModelDetailsSettings, OllamaSettings

CONFIG_ENV = "GATEWAY_CONFIG"
#: Names of accounts, teams and database keys: safe in URLs, logs and metric labels.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"

DEFAULT_FINISHED = ("completed", "complete", "finished", "done", "success", "succeeded", "ended")
_FAILED = "failed failure error errored cancelled canceled aborted killed timeout timedout expired"
DEFAULT_FAILED = tuple(f"{_FAILED} rejected".split())


#: What ``redis.url`` and ``ledger.url`` may start with (the clients that open them).
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
LEDGER_SCHEMES = ("sqlite:///", "postgresql://", "postgres://")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CircuitBreakerSettings(_Frozen):
    failure_threshold: int = Field(5, ge=1)
    reset_seconds: float = Field(10.0, gt=0)


class UpstreamSettings(_Frozen):
    base_url: str | None = None
    app: str = "gridrepublic:text-inference"
    poll_interval: float = Field(0.25, gt=0, le=60)
    poll_backoff_max: float = Field(5.0, gt=0)
    status_url_max_length: int = Field(8000, ge=256)
    status_max_ids: int | None = Field(100, ge=1)
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(30.0, gt=0)
    max_connections: int = Field(100, ge=1)
    # Under the upstream's own idle timeout, or a request can leave on a connection the
    # service is closing that instant (a ReadError: a whole batch of submissions failed).
    keepalive_expiry: float = Field(4.0, gt=0, le=3600)
    hours: float | None = Field(None, gt=0)
    inputs_field: str = "inputs"
    finished_statuses: tuple[str, ...] = DEFAULT_FINISHED
    failed_statuses: tuple[str, ...] = DEFAULT_FAILED
    missing_job_ticks: int = Field(20, ge=1)
    submit_retries: int = Field(2, ge=0)
    submit_batch_window: float = Field(50.0, ge=0, le=1000)
    submit_batch_min_age: float = Field(2.0, ge=0, le=1000)
    submit_batch_max_inputs: int = Field(64, ge=1)
    max_jobs_per_token: int | None = Field(None, ge=1)
    queue_size_per_token: int = Field(1000, ge=0)
    strip_ansi: bool = True
    shared_polling: bool = True
    circuit_breaker: CircuitBreakerSettings = CircuitBreakerSettings()

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("finished_statuses", "failed_statuses")
    @classmethod
    def _lower(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v.lower() for v in value)


class ModelSettings(_Frozen):
    name: str = Field(min_length=1)
    tag: str = Field(min_length=1)
    aliases: tuple[str, ...] = ()
    description: str | None = None
    owned_by: str = "distributed-llm-service"
    template: str = "transcript"
    template_jinja: str | None = None
    tool_template: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    deadline: float | None = Field(None, gt=0)
    context_window: int | None = Field(None, ge=256)  # None: its tag's (engine/catalog.py)
    answer_reserve: int | None = Field(None, ge=1)  # see gateway/engine/fitting.py
    truncation: Literal["auto", "disabled"] = "disabled"  # auto: oldest turns may be left out
    cache: bool | None = None  # None: as cache.models says
    details: ModelDetailsSettings | None = None  # the Ollama door's model details


def _sha256_hex(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise ValueError("must be 64 hex digits (a sha256 digest)")
    return value.lower() if value else value


class AccountSettings(_Frozen):
    """An upstream account by name: keys refer to it with ``account:``; its token stays here."""

    name: str = Field(min_length=1, pattern=NAME_PATTERN)
    upstream_token: str = Field(min_length=1, repr=False)


class KeySettings(_Frozen):
    name: str = Field(min_length=1)
    key: str | None = Field(None, min_length=8, repr=False)
    key_sha256: str | None = None
    #: Filled from ``accounts`` when the key names an ``account`` instead (see Settings).
    upstream_token: str = Field(min_length=1, repr=False)
    account: str | None = None
    team: str | None = None
    weight: float = Field(1.0, gt=0, le=1000)
    priority: int = Field(0, ge=-100, le=100)
    models: tuple[str, ...] | None = None
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    max_concurrent: int | None = Field(None, ge=1)
    daily_tokens: int | None = Field(None, ge=1)
    monthly_tokens: int | None = Field(None, ge=1)
    expires_at: datetime | None = None
    disabled: bool = False
    cache: bool = True  # False: this key's requests never read, fill or join the cache
    identity: str | None = Field(None, min_length=1, max_length=200)  # see keys.digests.owner

    @field_validator("key_sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        return _sha256_hex(value)

    @model_validator(mode="after")
    def _one_key(self) -> KeySettings:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of 'key' or 'key_sha256'")
        return self

    @functools.cached_property
    def digest(self) -> str:
        """The sha256 hex digest the gateway compares presented keys against (worked out once:
        every stored response asks for its key's owner; settings are copied with other fields
        changed, never ``key``)."""
        if self.key_sha256 is not None:
            return self.key_sha256
        assert self.key is not None
        return hashlib.sha256(self.key.encode()).hexdigest()


class LimitSettings(_Frozen):
    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_json_depth: int = Field(32, ge=4)
    max_n: int = Field(8, ge=1)
    max_messages: int = Field(1000, ge=1)
    max_prompt_chars: int = Field(400_000, ge=1)
    max_tokens: int = Field(32_768, ge=1)
    max_stop_sequences: int = Field(4, ge=1)
    default_deadline: float = Field(600.0, gt=0)
    max_deadline: float = Field(3600.0, gt=0)
    keepalive_interval: float = Field(15.0, gt=0)
    completion_estimate: int = Field(256, ge=1)
    structured_retries: int = Field(2, ge=0)
    schema_check_seconds: float = Field(0.5, gt=0, le=60)
    #: Values in every client JSON schema of one request together (tools and output format).
    max_schema_nodes: int = Field(10_000, ge=100, le=1_000_000)


class ServerSettings(_Frozen):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    graceful_shutdown_seconds: float = Field(30.0, ge=0)
    cors_origins: tuple[str, ...] = ()
    system_fingerprint: str = "fp_gateway"
    gc_freeze: bool = True
    gc_threshold: tuple[PositiveInt, PositiveInt, PositiveInt] | None = (10_000, 10, 10)
    # Per-connection limits, enforced before a request reaches the app (gateway/http/connections).
    max_header_bytes: int = Field(32_768, ge=1024, le=1_048_576)
    max_headers: int = Field(100, ge=8, le=1000)
    header_timeout: float = Field(10.0, gt=0)
    body_timeout: float = Field(30.0, gt=0)
    max_connections: int = Field(8192, ge=1)
    idle_timeout: float = Field(65.0, gt=0, le=3600)
    # /metrics: on its own port (0 = any free one, for tests) and/or behind a bearer token.
    metrics_port: int | None = Field(None, ge=0, le=65535)
    metrics_token: str | None = Field(None, min_length=16, repr=False)
    console: bool = True


class RedisSettings(_Frozen):
    url: str | None = None
    prefix: str = "gateway:"
    failure_policy: Literal["open", "closed"] = "open"
    timeout: float = Field(0.5, gt=0)
    pool_size: int = Field(100, ge=1, le=10_000)
    pool_timeout: float = Field(5.0, gt=0)
    lease_seconds: float = Field(30.0, gt=0)
    probe_interval: float = Field(1.0, gt=0)

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        """A URL redis-py can open, checked now rather than at the first request."""
        if not value:  # "" (say ``${REDIS_URL:-}``) means no Redis, as null does
            return None
        if not value.startswith(REDIS_SCHEMES) or len(value) <= value.index("//") + 2:
            raise ValueError(
                "must be a redis://, rediss:// or unix:// URL, e.g. redis://host:6379/0"
            )
        return value


class LedgerSettings(_Frozen):
    url: str = "sqlite:///gateway-usage.db"
    log_prompts: bool = False
    queue_size: int = Field(10_000, ge=1)
    table: str = Field("gateway_usage", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    batch_size: int = Field(500, ge=1)
    batch_wait_seconds: float = Field(0.05, ge=0, le=5)  # group commit: a batch's least age
    db_timeout_seconds: float = Field(10.0, gt=0, le=600)  # any one operation (gateway.db)
    db_pool_size: int = Field(10, ge=1, le=1000)  # PostgreSQL connections per URL, all users
    spill_path: str | None = None
    spill_max_mb: int = Field(64, ge=1)

    @field_validator("url")
    @classmethod
    def _ledger_scheme(cls, value: str) -> str:
        """Only the stores the ledger has; a bad URL is a start-up error, not a late traceback."""
        if not value.startswith(LEDGER_SCHEMES) or value in LEDGER_SCHEMES:
            raise ValueError(
                "must be sqlite:///path (or sqlite:///:memory:) or postgresql://user@host/db"
            )
        return value


class ResponsesSettings(_Frozen):
    """The Responses API's store: stored responses, their items, background runs."""

    store_url: str | None = None  # None: the ledger's database
    table: str = Field("gateway_responses", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,50}$")
    retention_hours: float = Field(720.0, gt=0)
    background_lease_seconds: float = Field(15.0, ge=1)
    max_item_bytes: int = Field(4 * 1024 * 1024, ge=1024)  # one stored item, as stored
    max_response_bytes: int = Field(16 * 1024 * 1024, ge=1024)  # one stored response
    max_key_bytes: int = Field(512 * 1024 * 1024, ge=1024)  # all of one key's stored responses


class AdminKeySettings(_Frozen):
    """One admin key: ``admin`` may change keys and teams, ``viewer`` may only read."""

    name: str = Field(min_length=1)
    key: str | None = Field(None, min_length=8, repr=False)
    key_sha256: str | None = None
    role: Literal["admin", "viewer"] = "admin"

    @field_validator("key_sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        return _sha256_hex(value)

    @model_validator(mode="after")
    def _one_key(self) -> AdminKeySettings:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of 'key' or 'key_sha256'")
        return self

    @property
    def digest(self) -> str:
        if self.key_sha256 is not None:
            return self.key_sha256
        assert self.key is not None
        return hashlib.sha256(self.key.encode()).hexdigest()


class AdminSettings(_Frozen):
    key: str | None = Field(None, min_length=8, repr=False)
    key_sha256: str | None = None
    keys: tuple[AdminKeySettings, ...] = ()

    def all_keys(self) -> tuple[AdminKeySettings, ...]:
        """``keys`` plus the single ``key`` / ``key_sha256`` of older configs (role admin)."""
        if self.key is None and self.key_sha256 is None:
            return self.keys
        legacy = AdminKeySettings(name="admin", key=self.key, key_sha256=self.key_sha256)
        return (legacy, *self.keys)


class KeyStoreSettings(_Frozen):
    """Keys and teams kept in the database of ``ledger.url``, managed through /admin."""

    enabled: bool = True
    #: HMAC-SHA256 secret for the digests of new database keys (from the environment).
    secret: str | None = Field(None, min_length=16, repr=False)
    poll_seconds: float = Field(0.5, gt=0, le=60)
    table_prefix: str = Field("gateway_", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,40}$")

    @field_validator("secret", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value


class LoggingSettings(_Frozen):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text", "auto"] = "auto"
    log_prompts: bool = False


class CacheSettings(_Frozen):
    """The response cache and shared jobs (off unless a model is named or says ``cache: true``)."""

    backend: Literal["memory", "redis"] = "memory"
    models: tuple[str, ...] = ()
    ttl: float = Field(3600.0, gt=0)
    max_entries: int = Field(10_000, ge=1)
    max_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    max_entry_bytes: int = Field(1024 * 1024, ge=256)
    redis_url: str | None = None
    prefix: str = "gateway:cache:"
    share_jobs: bool = True
    count_in_budget: bool = False
    #: "account": an answer is shared only by keys of the same upstream account; "global": by
    #: every key (jobs are only ever shared within an account).
    scope: Literal["account", "global"] = "account"


class EmulatorSettings(_Frozen):
    """The embedded jobs-API emulator, started when no upstream ``base_url`` is set."""

    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)
    token: str = Field("demo-upstream-token", repr=False)
    demo_key: str = Field("sk-gateway-demo", min_length=8, repr=False)
    #: The demo's admin key (console Keys and Live pages); null: none, the admin routes are off.
    demo_admin_key: str | None = Field("sk-gateway-demo-admin", min_length=8, repr=False)
    queue_seconds: float = Field(0.5, ge=0)
    words_per_second: float = Field(20.0, gt=0)


class TracingSettings(_Frozen):
    """OpenTelemetry traces over OTLP/HTTP; off while ``otlp_endpoint`` is unset."""

    otlp_endpoint: str | None = None
    service_name: str = Field("llm-gateway", min_length=1)
    sample_ratio: float = Field(1.0, ge=0, le=1)
    trust_client_sampling: bool = False
    headers: dict[str, str] = Field(default_factory=dict, repr=False)

    @field_validator("otlp_endpoint")
    @classmethod
    def _needs_otel(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        if missing := missing_modules(OTEL_MODULES):
            raise ValueError(
                f"OpenTelemetry is not installed ({missing[0]} is missing): {OTEL_INSTALL} "
                "(or leave tracing.otlp_endpoint unset)"
            )
        return value


class Settings(_Frozen):
    server: ServerSettings = ServerSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    models: tuple[ModelSettings, ...] = ()
    accounts: tuple[AccountSettings, ...] = ()
    keys: tuple[KeySettings, ...] = ()
    limits: LimitSettings = LimitSettings()
    redis: RedisSettings = RedisSettings()
    ledger: LedgerSettings = LedgerSettings()
    responses: ResponsesSettings = ResponsesSettings()
    files: FileSettings = FileSettings()
    batches: BatchSettings = BatchSettings()
    admin: AdminSettings = AdminSettings()
    key_store: KeyStoreSettings = KeyStoreSettings()
    logging: LoggingSettings = LoggingSettings()
    emulator: EmulatorSettings = EmulatorSettings()
    cache: CacheSettings = CacheSettings()
    tracing: TracingSettings = TracingSettings()
    ollama: OllamaSettings = OllamaSettings()

    @model_validator(mode="before")
    @classmethod
    def _resolve_accounts(cls, data: Any) -> Any:
        """A key naming an ``account`` gets that account's upstream token (kept out of the DB)."""
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list | tuple):
            return data
        tokens = {
            a.get("name"): a.get("upstream_token")
            for a in data.get("accounts") or ()
            if isinstance(a, dict)
        }
        keys = []
        for key in data["keys"]:
            if isinstance(key, dict) and key.get("account") is not None:
                if key["account"] not in tokens:
                    raise ValueError(
                        f"key {key.get('name')!r} names unknown account {key['account']!r}"
                    )
                if key.get("upstream_token") is None:
                    key = {**key, "upstream_token": tokens[key["account"]]}
                elif key["upstream_token"] != tokens[key["account"]]:
                    raise ValueError(
                        f"key {key.get('name')!r} gives an upstream_token other than its "
                        f"account's ({key['account']!r}): give one or the other"
                    )
            keys.append(key)
        return {**data, "keys": keys}

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        seen: set[str] = set()
        for model in self.models:
            for name in (model.name, *model.aliases):
                if name in seen:
                    raise ValueError(f"model name or alias {name!r} is used twice")
                seen.add(name)
        key_names = [k.name for k in self.keys]
        if twice := repeated(key_names):
            raise ValueError(f"key names must be unique: {twice} given more than once")
        # Two keys with one secret: the first would silently take the other's requests.
        by_digest: dict[str, str] = {}
        for key in self.keys:
            if (other := by_digest.setdefault(key.digest, key.name)) != key.name:
                raise ValueError(
                    f"keys {other!r} and {key.name!r} have the same secret (key or key_sha256); "
                    "give each key its own"
                )
        for name in key_names:
            if name.startswith("team:"):
                raise ValueError(f"key name {name!r}: names starting with 'team:' are reserved")
        account_names = [a.name for a in self.accounts]
        if twice := repeated(account_names):
            raise ValueError(f"account names must be unique: {twice} given more than once")
        admin_names = [a.name for a in self.admin.all_keys()]
        if twice := repeated(admin_names):
            raise ValueError(
                f"admin key names must be unique: {twice} given more than once "
                "(the single admin.key is 'admin')"
            )
        for key in self.keys:
            for allowed in key.models or ():
                if allowed not in seen:
                    raise ValueError(f"key {key.name!r} allows unknown model {allowed!r}")
        for cached in self.cache.models:
            if cached != "*" and cached not in seen:
                raise ValueError(f"cache.models names unknown model {cached!r}")
        if self.cache.backend == "redis" and not (self.cache.redis_url or self.redis.url):
            raise ValueError("cache.backend redis needs cache.redis_url or redis.url")
        return self

    @property
    def embedded_emulator(self) -> bool:
        """True when no upstream is configured: the gateway runs its own emulator."""
        return self.upstream.base_url is None


def parse_settings(data: dict[str, Any]) -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, data, Settings)) from None


def load_settings(
    path: str | Path | None = None, environ: dict[str, str] | None = None
) -> Settings:
    """Read the YAML file at ``path`` (or ``$GATEWAY_CONFIG``); no file means the demo setup."""
    env: dict[str, str] | os._Environ[str] = environ if environ is not None else os.environ
    if path is None:
        path = env.get(CONFIG_ENV) or None
    if path is None:
        return parse_settings({})
    try:
        raw = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        tried = "" if Path(path).is_absolute() else f" ({Path(path).resolve()})"
        raise ConfigError(f"cannot read config file {path}{tried}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(raw) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return parse_settings(interpolate_tree(data, env))
