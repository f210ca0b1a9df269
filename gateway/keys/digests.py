"""New secrets and their digests: sha256 of a 256-bit random key, or HMAC-SHA256 with a secret.

A plain sha256 is enough for keys this random (no dictionary to try); the HMAC variant, used
when ``key_store.secret`` is set, also makes a stolen table useless without the server secret.
Each record says which scheme made its digest, so setting the secret later keeps old keys valid.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from gateway.config import KeySettings
from gateway.keys.model import Scheme

KEY_PREFIX = "sk-gw-"


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def sha256_hex(presented: str) -> str:
    return hashlib.sha256(presented.encode("utf-8", "surrogateescape")).hexdigest()


def hmac_hex(secret: str, presented: str) -> str:
    data = presented.encode("utf-8", "surrogateescape")
    return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def digest_for(presented: str, secret: str | None) -> tuple[str, Scheme]:
    """The digest a new key is stored under, and its scheme."""
    if secret:
        return hmac_hex(secret, presented), "hmac"
    return sha256_hex(presented), "sha256"


def owner(key: KeySettings) -> str:
    """The identity a key's stored data belongs to: stable, never a reusable name.

    A config key's is the digest of its secret (or its ``identity``, if the operator set one);
    a database key's is ``db:<name>:<created_at>`` (set by the registry, kept on rotation). A
    key made later with the name of a removed one is another identity: it inherits nothing.
    """
    return key.identity if key.identity is not None else "sha256:" + key.digest
