"""Who may use ``/admin``: admin keys from the config, each with a role.

``admin`` may change keys and teams; ``viewer`` may read keys, teams, usage and the audit trail
and nothing else. The single ``admin.key`` of older configs is an ``admin`` named "admin".
Every configured digest is compared in constant time, without an early exit.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from gateway.auth import presented_key
from gateway.config import AdminKeySettings
from gateway.errors import AuthenticationFailed, NotFound, PermissionDenied


@dataclass(frozen=True, slots=True)
class AdminIdentity:
    name: str
    role: str

    @property
    def actor(self) -> str:
        """How the audit trail names this caller."""
        return f"admin:{self.name}"


class AdminKeys:
    def __init__(self, keys: Sequence[AdminKeySettings]) -> None:
        self._entries = [(bytes.fromhex(k.digest), AdminIdentity(k.name, k.role)) for k in keys]

    def authorize(
        self,
        headers: Mapping[str, str],
        *,
        write: bool,
        is_gateway_key: Callable[[Mapping[str, str]], bool] = lambda _: False,
    ) -> AdminIdentity:
        """The caller, or the refusal: 404 with no admin key configured, 401 without a valid
        key, 403 for a gateway (non-admin) key or a viewer asking to change something."""
        if not self._entries:
            raise NotFound("The admin endpoints are off: no admin key is configured.")
        presented = presented_key(headers)
        if presented is None:
            raise AuthenticationFailed(
                "This endpoint needs an admin key: send 'Authorization: Bearer <admin key>'.",
                code="missing_api_key",
            )
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        found: AdminIdentity | None = None
        for expected, identity in self._entries:
            if hmac.compare_digest(digest, expected):
                found = identity
        if found is None:
            if is_gateway_key(headers):
                raise PermissionDenied(
                    "This endpoint needs an admin key; a gateway key cannot use it.",
                    code="admin_key_required",
                )
            raise AuthenticationFailed("This endpoint needs the admin key.")
        if write and found.role != "admin":
            raise PermissionDenied(
                f"The admin key {found.name!r} has the role {found.role!r}: it may only read.",
                code="read_only_admin_key",
            )
        return found
