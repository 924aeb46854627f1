"""Authentication: password hashing and access tokens. Plain Python, no web types.

The API wraps these in request dependencies; the CLI uses them directly.
"""

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
    load_or_create_secret,
)

__all__ = [
    "MAX_PASSWORD_BYTES",
    "MAX_TOKEN_BYTES",
    "MIN_PASSWORD_CHARS",
    "AccessClaims",
    "AccessToken",
    "PasswordCheck",
    "PasswordHasher",
    "TokenAuthority",
    "check_password_policy",
    "load_or_create_secret",
]
