"""Refresh tokens: opaque random values, known to the database only as a sha256.

A refresh token is not a JWT: it carries nothing, so it cannot stand in for an
access token (it fails the JWT syntax check) and leaking the database leaks no
usable token. 32 random bytes make guessing hopeless, so a plain sha256 (no salt,
no slow hash) is enough and keeps the lookup a primary-key match.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from strongroom.errors import InvalidGrantError

__all__ = ["REFRESH_TOKEN_BYTES", "hash_refresh_token", "new_refresh_token"]

# 256 bits of randomness (RFC 9700 asks refresh tokens to be unguessable).
REFRESH_TOKEN_BYTES = 32
# token_urlsafe(32) gives 43 characters; anything else is refused before hashing.
_REFRESH_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")


def new_refresh_token() -> tuple[str, str]:
    """Return a fresh refresh token and its sha256 (hex), to store."""
    value = secrets.token_urlsafe(REFRESH_TOKEN_BYTES)
    return value, _sha256(value)


def hash_refresh_token(value: str) -> str:
    """Return the sha256 of a refresh token a client sent.

    Raises:
        InvalidGrantError: the value has not the shape of our refresh tokens.
    """
    if _REFRESH_TOKEN.fullmatch(value) is None:
        raise InvalidGrantError("refresh token refused: it is malformed")
    return _sha256(value)


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode("ascii")).hexdigest()
