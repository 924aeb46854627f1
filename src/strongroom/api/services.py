"""The services one app process holds: database, blobs, spaces, tokens, passwords."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from strongroom.auth import (
    AccessClaims,
    PasswordHasher,
    TokenAuthority,
    load_key_set,
)
from strongroom.auth.throttle import LoginThrottle
from strongroom.config import Settings
from strongroom.errors import AuthError, InvalidTokenError
from strongroom.storage import MetadataStore, User, open_metadata_store
from strongroom.storage.blobs import LocalBlobStore
from strongroom.storage.home import HomeSpace
from strongroom.storage.registry import SpaceRegistry, UserLike, open_directory_spaces
from strongroom.storage.spaces import Space

__all__ = ["Services", "open_token_authority"]

log = logging.getLogger("strongroom.auth")

# Verified tokens remembered per process: each entry is a token string (under
# 1 KiB) and its claims, so the cache stays under ~10 MiB.
VERIFIED_TOKEN_CACHE_SIZE = 10_000

# One message for every failed login, so the answer never tells whether the user
# name exists.
_LOGIN_FAILED = "wrong user name or password"


@dataclass
class Services:
    """Everything a request needs, built once at start-up and shared by all."""

    settings: Settings
    meta: MetadataStore
    blobs: LocalBlobStore
    spaces: SpaceRegistry
    tokens: TokenAuthority
    passwords: PasswordHasher
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    _verified: dict[str, AccessClaims] = field(default_factory=dict)

    @classmethod
    def open(cls, settings: Settings) -> Services:
        """Open the database, the blob store, every space root and the secret.

        Raises `ConfigError` for a missing space directory or a weak secret and
        `StorageError` for an unreachable database.
        """
        data_dir, resolver = settings.data_dir, settings.resolver
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        meta = open_metadata_store(settings.database_url)
        blobs = LocalBlobStore.open_dir(data_dir / "blobs", resolver=resolver)

        def home_for(user: UserLike) -> Space:
            return HomeSpace(user.id, meta, blobs)

        spaces = SpaceRegistry(
            open_directory_spaces(settings.spaces, resolver=resolver), home_for
        )
        tokens = open_token_authority(settings)
        return cls(settings, meta, blobs, spaces, tokens, PasswordHasher())

    def login(
        self, user_name: str, password: str, client: str = "unknown"
    ) -> tuple[str, int]:
        """Check a password and issue an access token; return (token, expires_in).

        Raises `AuthError` with one message for every failure, and
        `TooManyRequestsError` while the name or the client address must wait.
        """
        self.throttle.check(user_name, client)
        user = self.meta.get_user_by_name(user_name)
        stored = user.password_hash if user is not None and user.active else None
        check = self.passwords.verify(stored, password)
        if user is None or not check.ok:
            self.throttle.failed(user_name, client)
            log.warning("login_failed", extra={"reason": "bad_credentials"})
            raise AuthError(_LOGIN_FAILED)
        self.throttle.succeeded(user_name)
        if check.needs_rehash:
            new_hash = self.passwords.hash(password)
            self.meta.set_password(user.id, new_hash, revoke_tokens=False)
        token = self.tokens.issue_access_token(user.id, self.settings.token_ttl_seconds)
        log.info("login", extra={"user_id": user.id})
        return token.value, token.expires_in

    def authenticate(self, token: str) -> User:
        """Return the active user a bearer token names.

        One indexed lookup by id per request: a removed or deactivated user, or a
        token issued before the user's last password change, is refused at once.

        Raises:
            InvalidTokenError: the token fails verification, its user is gone or
                inactive, or it was revoked.
        """
        claims = self._verified.get(token)
        if claims is None or claims.expires_at <= datetime.now(UTC):
            claims = self.tokens.verify_access_token(token)
            self._remember(token, claims)
        user = self.meta.get_user_by_id(claims.user_id)
        if user is None or not user.active:
            raise InvalidTokenError("access token refused: the user no longer exists")
        if claims.is_revoked_by(user.tokens_valid_after):
            raise InvalidTokenError("access token refused: it was revoked")
        return user

    def _remember(self, token: str, claims: AccessClaims) -> None:
        # Only fully verified tokens get here, keyed by their exact string, and
        # an entry is used only until its exp: what it skips (syntax, key,
        # signature, types, aud, iss, lifetime) cannot change for the same string
        # while this process lives, since the key set is fixed at start-up. Time
        # (exp) is re-checked by the caller, and the user lookup and revocation
        # check run on every request. Clearing the whole map when it is full
        # bounds memory without an LRU.
        if len(self._verified) >= VERIFIED_TOKEN_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = claims

    def close(self) -> None:
        """Release every root and connection."""
        self.spaces.close()
        self.blobs.close()
        self.meta.close()


def open_token_authority(settings: Settings) -> TokenAuthority:
    """Load the token keys the settings name and build the token authority.

    Raises `ConfigError` for a missing, unsafe or weak key, or mixed algorithms.
    """
    keys = load_key_set(
        settings.token_algorithm,
        settings.data_dir,
        settings.token_key_file,
        settings.token_verify_key_files,
    )
    return TokenAuthority(
        keys,
        max_ttl_seconds=settings.token_ttl_seconds,
        leeway_seconds=settings.token_leeway_seconds,
    )
