"""Gateway keys: who is calling, and which upstream token their requests use."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC
from typing import Protocol

from gateway.config import KeySettings
from gateway.errors import AuthenticationFailed, PermissionDenied


class KeyLookup(Protocol):
    """Keys found by digest beyond the config's (:class:`gateway.keys.registry.KeyRegistry`):
    stated here so that this module, below the key store, does not import it."""

    def lookup(self, sha256: str, presented: str, now: float) -> KeySettings | None: ...

    def settings(self, name: str) -> KeySettings | None:
        """The live key called ``name``, or None."""


def bearer_token(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a client presents: ``Authorization: Bearer`` (OpenAI's SDKs) or ``x-api-key``
    (Anthropic's SDKs and Claude Code); the bearer token wins when both are sent."""
    token = bearer_token(headers)
    if token is not None:
        return token
    value = headers.get("x-api-key", "").strip()
    return value or None


def key_refusal(key: KeySettings, now: float) -> PermissionDenied | None:
    """Why ``key`` may not be used at all at ``now`` (disabled, expired), or None."""
    if key.disabled:
        return PermissionDenied("This API key is disabled.", code="key_disabled")
    if key.expires_at is not None:
        expires = key.expires_at
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        if now >= expires.timestamp():
            return PermissionDenied("This API key has expired.", code="key_expired")
    return None


class KeyRing:
    """Checks presented keys against sha256 digests, comparing each in constant time.

    Every configured digest is compared (no early exit), so the time taken says nothing
    about which key, if any, nearly matched. Keys from the database (``registry``) are then
    found by their digest in one dict lookup (see :mod:`gateway.keys.registry`). A disabled or
    expired key is refused here, so that every route that authenticates refuses it.
    """

    def __init__(
        self,
        keys: Sequence[KeySettings],
        registry: KeyLookup | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._entries = [(bytes.fromhex(k.digest), k) for k in keys]
        self._by_name = {k.name: k for k in keys}
        self.registry = registry
        self._clock = clock

    def authenticate(self, headers: Mapping[str, str]) -> KeySettings:
        presented = presented_key(headers)
        if presented is None:
            raise AuthenticationFailed(
                "Missing API key: send 'Authorization: Bearer <gateway key>' or "
                "'x-api-key: <gateway key>'.",
                code="missing_api_key",
            )
        hashed = hashlib.sha256(presented.encode("utf-8", "surrogateescape"))
        digest = hashed.digest()
        found: KeySettings | None = None
        for expected, key in self._entries:
            if hmac.compare_digest(digest, expected):
                found = key
        if found is None and self.registry is not None:
            found = self.registry.lookup(hashed.hexdigest(), presented, time.time())
        if found is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        refusal = key_refusal(found, self._clock())
        if refusal is not None:
            raise refusal
        return found

    def by_name(self, name: str) -> KeySettings | None:
        """The live key called ``name`` (the config's, else the database's), or None.

        The one lookup by name: what a key did outside a request (a background run resumed
        after a restart, say) is charged to the key that started it, wherever it is kept."""
        found = self._by_name.get(name)
        if found is None and self.registry is not None:
            found = self.registry.settings(name)
        return found


def account_names(
    keys: Sequence[KeySettings], accounts: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A printable name per upstream token, for logs and metrics: the name of its configured
    account (``accounts``: name -> token), else the first key using it."""
    names: dict[str, str] = {}
    for name, token in (accounts or {}).items():
        names.setdefault(token, name)
    for key in keys:
        names.setdefault(key.upstream_token, key.name)
    return names
