"""Authentication: password hashing, token keys and access tokens. No web types.

The API wraps these in request dependencies; the CLI uses them directly.
"""

from strongroom.auth.keys import KeySet, TokenKey, load_key_set, load_or_create_secret
from strongroom.auth.passwords import (
    MAX_PASSWORD_BYTES,
    MIN_PASSWORD_CHARS,
    PasswordCheck,
    PasswordHasher,
    check_password_policy,
)
from strongroom.auth.tokens import (
    MAX_TOKEN_BYTES,
    AccessClaims,
    AccessToken,
    TokenAuthority,
)

__all__ = [
    "MAX_PASSWORD_BYTES",
    "MAX_TOKEN_BYTES",
    "MIN_PASSWORD_CHARS",
    "AccessClaims",
    "AccessToken",
    "KeySet",
    "PasswordCheck",
    "PasswordHasher",
    "TokenAuthority",
    "TokenKey",
    "check_password_policy",
    "load_key_set",
    "load_or_create_secret",
]
