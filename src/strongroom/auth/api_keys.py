"""API keys for scripts: long random secrets, named, scoped, revocable.

A key reads `srk_<id>_<secret>`: `id` (16 random bytes, base64url) names its row,
`secret` (32 random bytes) proves possession. The database keeps only the
SHA-256 of the secret: with 256 random bits nothing slower is needed, and a
leaked table holds no usable key. The `srk_` prefix lets secret scanners and
people recognise a leaked key, and keeps a key from ever parsing as a JWT.

A key carries its own scopes, at most those of the login that made it, and
dies when revoked, when it expires, or when its account's tokens are revoked
(a password change, a role change, a disable, `strongroom token revoke`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

__all__ = [
    "API_KEY_PREFIX",
    "digests_match",
    "is_api_key",
    "new_api_key",
    "split_api_key",
]

API_KEY_PREFIX = "srk_"
_KEY = re.compile(r"srk_([A-Za-z0-9_-]{22})_([A-Za-z0-9_-]{43})")


def new_api_key() -> tuple[str, str, str]:
    """Return (key, id, sha256 of the secret) for a new key; show `key` once."""
    key_id = secrets.token_urlsafe(16)
    secret = secrets.token_urlsafe(32)
    return f"{API_KEY_PREFIX}{key_id}_{secret}", key_id, _digest(secret)


def is_api_key(value: str) -> bool:
    """Return whether a bearer value is meant as an API key (by its prefix)."""
    return value.startswith(API_KEY_PREFIX)


def split_api_key(value: str) -> tuple[str, str] | None:
    """Return (id, sha256 of the secret) of a well-formed key, else None."""
    match = _KEY.fullmatch(value)
    if match is None:
        return None
    return match.group(1), _digest(match.group(2))


def digests_match(stored: str, presented: str) -> bool:
    """Compare two secret digests in constant time."""
    return hmac.compare_digest(stored.encode("ascii"), presented.encode("ascii"))


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()
