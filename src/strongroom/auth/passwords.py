"""Password hashing with argon2id.

Parameters follow RFC 9106's second recommended option (argon2id, 3 passes,
64 MiB, 4 lanes), which is argon2-cffi's default profile; the first option needs
2 GiB per hash, more than a small server can give each login. A stored hash made
with other parameters still verifies, and `PasswordCheck.needs_rehash` tells the
caller to store a fresh hash.

Each hash costs 64 MiB and tens of milliseconds of CPU, so a burst of logins
could exhaust memory: a process-wide bounded semaphore lets only
`MAX_CONCURRENT_HASHES` run at once, and the others wait their turn.

Unknown users are checked against a dummy hash made with the same parameters, so
the answer takes as long as for a known user with a wrong password and timing
does not reveal which names exist.

Nothing here logs a password or a hash.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from strongroom.errors import PasswordPolicyError

__all__ = [
    "MAX_CONCURRENT_HASHES",
    "MAX_PASSWORD_BYTES",
    "MIN_PASSWORD_CHARS",
    "PasswordCheck",
    "PasswordHasher",
    "check_password_policy",
]

# Argon2 accepts passwords of any length, but hashing megabytes is a denial of
# service; 1024 bytes is far beyond any passphrase.
MAX_PASSWORD_BYTES = 1024
# NIST SP 800-63B, section 5.1.1.2: at least 8 characters for a chosen secret.
MIN_PASSWORD_CHARS = 8
# Four hashes at 64 MiB each bound hashing memory to 256 MiB; more in parallel
# would not finish sooner on the two to four cores of a typical small server.
MAX_CONCURRENT_HASHES = 4

_SHARED_SLOTS = threading.BoundedSemaphore(MAX_CONCURRENT_HASHES)


@dataclass(frozen=True, slots=True)
class PasswordCheck:
    """The answer of `PasswordHasher.verify`.

    `ok`: the password matches. `needs_rehash`: it matches, but the stored hash
    uses other parameters; hash the password again and store the new hash.
    """

    ok: bool
    needs_rehash: bool = False


class PasswordHasher:
    """Hash and verify passwords with argon2id, a bounded number at a time.

    Thread-safe. All instances share one process-wide semaphore unless `slots`
    is given.
    """

    def __init__(
        self,
        parameters: argon2.Parameters | None = None,
        *,
        slots: threading.BoundedSemaphore | None = None,
    ) -> None:
        self._hasher = argon2.PasswordHasher.from_parameters(
            parameters or argon2.profiles.RFC_9106_LOW_MEMORY
        )
        self._slots = slots or _SHARED_SLOTS
        # Made with this hasher's own parameters, so it costs what a real one does.
        self._dummy_hash = self._hasher.hash(secrets.token_bytes(32))

    def hash(self, password: str) -> str:
        """Return an argon2id hash of a new password.

        Raises:
            PasswordPolicyError: the password has fewer than MIN_PASSWORD_CHARS
                characters or more than MAX_PASSWORD_BYTES bytes of UTF-8.
        """
        check_password_policy(password)

        with self._slots:
            return self._hasher.hash(_encode(password))

    def verify(self, stored_hash: str | None, password: str) -> PasswordCheck:
        """Check `password` against `stored_hash` (None: the user is unknown).

        Never raises for a wrong password, an unknown user, an over-long password
        or a malformed stored hash: each is simply not `ok`. For an unknown user
        the dummy hash is verified, so the call costs the same time.
        """
        secret = _encode(password)
        if len(secret) > MAX_PASSWORD_BYTES:
            return PasswordCheck(ok=False)

        with self._slots:
            if stored_hash is None:
                self._verify_quietly(self._dummy_hash, secret)
                return PasswordCheck(ok=False)
            if not self._verify_quietly(stored_hash, secret):
                return PasswordCheck(ok=False)
        return PasswordCheck(ok=True, needs_rehash=self._needs_rehash(stored_hash))

    def _verify_quietly(self, stored_hash: str, secret: bytes) -> bool:
        try:
            return self._hasher.verify(stored_hash, secret)
        except (VerificationError, InvalidHashError):
            return False

    def _needs_rehash(self, stored_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return True


def check_password_policy(password: str) -> None:
    """Raise PasswordPolicyError unless `password` may be set as a new password."""
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        # Bytes that are not UTF-8 (read with surrogate escapes) could never be
        # typed into the login form, so the account would be unreachable.
        raise PasswordPolicyError("the password is not valid UTF-8 text") from None
    if "\x00" in password:
        raise PasswordPolicyError("the password holds a NUL character")
    if len(password) < MIN_PASSWORD_CHARS:
        raise PasswordPolicyError(
            f"the password is too short; use at least {MIN_PASSWORD_CHARS} characters"
        )
    if len(_encode(password)) > MAX_PASSWORD_BYTES:
        raise PasswordPolicyError(
            f"the password is too long; use at most {MAX_PASSWORD_BYTES} bytes"
        )


def _encode(password: str) -> bytes:
    # "surrogatepass": a lone surrogate from a badly decoded form must not raise
    # mid-verification; it simply becomes bytes that match no stored hash.
    return password.encode("utf-8", "surrogatepass")
