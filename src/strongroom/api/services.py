"""The services one app process holds: database, blobs, spaces, tokens, passwords."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from strongroom.api.offload import Offloader
from strongroom.auth import (
    AccessClaims,
    PasswordHasher,
    TokenAuthority,
    load_key_set,
)
from strongroom.auth.api_keys import (
    digests_match,
    is_api_key,
    new_api_key,
    split_api_key,
)
from strongroom.auth.refresh import hash_refresh_token, new_refresh_token
from strongroom.auth.scopes import ROLE_SCOPES, format_scopes, parse_scopes
from strongroom.auth.throttle import THROTTLE_KEY_PURPOSE, LoginThrottle
from strongroom.config import Settings
from strongroom.errors import (
    AuthError,
    InsufficientScopeError,
    InvalidGrantError,
    InvalidScopeError,
    InvalidTokenError,
    PathError,
    PermissionDeniedError,
    TooManyApiKeysError,
    TooManyRequestsError,
)
from strongroom.storage import MetadataStore, User, open_metadata_store
from strongroom.storage.api_keys import MAX_KEYS_PER_USER, ApiKey
from strongroom.storage.blob_stores import open_blob_store
from strongroom.storage.blobs import BlobStore
from strongroom.storage.home import HomeSpace
from strongroom.storage.imports import finish_interrupted_imports
from strongroom.storage.registry import SpaceRegistry, UserLike, open_directory_spaces
from strongroom.storage.sessions import RefreshOutcome
from strongroom.storage.spaces import Space

__all__ = ["IssuedTokens", "Services", "open_token_authority"]

log = logging.getLogger("strongroom.auth")
storage_log = logging.getLogger("strongroom.storage")

# Verified tokens remembered per process: each entry is a token string (under
# 1 KiB) and its claims, so the cache stays under ~10 MiB.
VERIFIED_TOKEN_CACHE_SIZE = 10_000

# One message for every failed login, so the answer never tells whether the user
# name exists.
_LOGIN_FAILED = "wrong user name or password"
# What the key of a failed login's name digest in the log is derived for.
_LOG_DIGEST_PURPOSE = "log name digest"
_REFRESH_REFUSED = "refresh token refused: log in again"


def _ignore_auth_failure(reason: str) -> None:
    """Count nothing: the default of `Services.on_auth_failure`."""


class ApiKeyRequest(Protocol):
    """What a request for a new API key carries (the API's `ApiKeyIn`)."""

    name: str
    scope: str
    password: str


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    """An access token and the refresh token of its session; values kept out of repr.

    `scope` is what the tokens may do, space-separated.
    """

    access_token: str = field(repr=False)
    expires_in: int
    refresh_token: str = field(repr=False)
    scope: str


@dataclass
class Services:
    """Everything a request needs, built once at start-up and shared by all."""

    settings: Settings
    meta: MetadataStore
    blobs: BlobStore
    spaces: SpaceRegistry
    tokens: TokenAuthority
    passwords: PasswordHasher
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    # Set by the app when downloads are handed to nginx or Apache (api.offload).
    offloader: Offloader | None = None
    # Told a short fixed reason for every refused login, password, refresh
    # token, access token or API key; the app counts them (api.metrics).
    on_auth_failure: Callable[[str], None] = _ignore_auth_failure
    _verified: dict[str, AccessClaims] = field(default_factory=dict)

    @classmethod
    def open(cls, settings: Settings) -> Services:
        """Open the database, the blob store, every space root and the secret.

        Raises `ConfigError` for a missing space directory, a weak secret or a
        bad blob store URL, and `StorageError` for an unreachable database or
        blob store.
        """
        data_dir, resolver = settings.data_dir, settings.resolver
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        meta = open_metadata_store(
            settings.database_url, auto_upgrade=settings.db_auto_upgrade
        )
        blobs = open_blob_store(settings)

        def home_for(user: UserLike) -> Space:
            quota = settings.home_quota_bytes
            return HomeSpace(user.id, meta, blobs, quota_bytes=quota)

        spaces = SpaceRegistry(
            open_directory_spaces(settings.spaces, resolver=resolver), home_for
        )
        tokens = open_token_authority(settings)
        # Counts in the database: every app process sees every failure.
        throttle = LoginThrottle(
            meta.login_failures, key=tokens.keys.secret_for(THROTTLE_KEY_PURPOSE)
        )
        return cls(settings, meta, blobs, spaces, tokens, PasswordHasher(), throttle)

    def login(
        self,
        user_name: str,
        password: str,
        client: str = "unknown",
        scope: str | None = None,
    ) -> IssuedTokens:
        """Check a password, open a session and issue its first tokens.

        `scope` asks for some of the scopes the user's role holds; without it the
        tokens get all of them.

        Raises:
            AuthError: with one message for every wrong name or password.
            InvalidScopeError: `scope` is malformed or unknown (checked first), or
                names a scope the user does not hold (checked after the password).
            TooManyRequestsError: while the name or the client address must wait.
        """
        requested = parse_scopes(scope) if scope is not None else None
        self._reserve_attempt(user_name, client)
        user = self.meta.get_user_by_name(user_name)
        stored = user.password_hash if user is not None and user.active else None
        check = self.passwords.verify(stored, password)
        if user is None or not check.ok:
            self._login_refused("login_failed", "bad_credentials", user_name, client)
            raise AuthError(_LOGIN_FAILED)
        self.throttle.succeeded(user_name, client)
        checked: User | None = user
        if check.needs_rehash:
            new_hash = self.passwords.hash(password)
            checked = self.meta.rehash_password(user.id, user.password_hash, new_hash)
        granted = _granted_scopes(user, requested)

        refresh_token, refresh_hash = new_refresh_token()
        session_id = None if checked is None else self.meta.sessions.start(
            checked,
            refresh_hash,
            scope=format_scopes(granted),
            absolute_seconds=self.settings.refresh_ttl_seconds,
            idle_seconds=self.settings.refresh_idle_seconds,
        )
        if session_id is None:
            # The password changed (or the account was revoked or disabled)
            # while this login was hashing: the password it checked is stale.
            log.warning("login_failed", extra={"reason": "changed_during_login"})
            self.on_auth_failure("changed_during_login")
            raise AuthError(_LOGIN_FAILED)
        log.info("login", extra={"user_id": user.id, "scope": format_scopes(granted)})
        return self._issue(user.id, session_id, refresh_token, granted)

    def refresh(self, refresh_token: str) -> IssuedTokens:
        """Spend a refresh token and return a new access and refresh token.

        A second use of a refresh token revokes its whole session (the access
        tokens too) and is logged as `refresh_token_reused`, a theft signal.

        Raises:
            InvalidGrantError: the token is malformed, unknown, used, expired, or
                its session was revoked, or its user is gone or inactive.
        """
        old_hash = hash_refresh_token(refresh_token)
        new_token, new_hash = new_refresh_token()
        result = self.meta.sessions.rotate(
            old_hash, new_hash, idle_seconds=self.settings.refresh_idle_seconds
        )

        fields = {"user_id": result.user_id, "session_id": result.session_id}
        if result.outcome is RefreshOutcome.REUSED:
            log.warning("refresh_token_reused", extra={**fields, "action": "revoked"})
        if result.outcome is not RefreshOutcome.ROTATED:
            log.warning("refresh_refused", extra={"reason": result.outcome.value})
            self.on_auth_failure(f"refresh_{result.outcome.value}")
            raise InvalidGrantError(_REFRESH_REFUSED)
        assert result.user_id is not None and result.session_id is not None
        user = self.meta.get_user_by_id(result.user_id)
        if user is None or not user.active:
            log.warning("refresh_refused", extra={**fields, "reason": "user"})
            self.on_auth_failure("refresh_user")
            raise InvalidGrantError(_REFRESH_REFUSED)
        # A role change revokes the session; the intersection is a second guard.
        granted = parse_scopes(result.scope) & ROLE_SCOPES[user.role]
        log.info("token_refreshed", extra=fields)
        return self._issue(user.id, result.session_id, new_token, granted)

    def change_password(
        self, user: User, current: str, new: str, client: str = "unknown"
    ) -> None:
        """Set a new password after checking the current one; revoke every token.

        Every session of the user ends, this one too: each process refuses the
        old tokens on its next request, and the user logs in again. Wrong current
        passwords count toward the login throttle like failed logins.

        Raises:
            PermissionDeniedError: the current password is wrong (403, so that
                a client does not take it for a refused token).
            PasswordPolicyError: the new password is too short or too long.
            TooManyRequestsError: while the name or the client address must wait.
        """
        self._recheck_password(user, current, client)
        self.meta.set_password(user.id, self.passwords.hash(new))
        log.warning(
            "tokens_revoked", extra={"user_id": user.id, "reason": "password_change"}
        )

    def logout(self, user: User, claims: AccessClaims) -> None:
        """Revoke the session of verified claims: its refresh and access tokens."""
        self.meta.sessions.revoke(claims.session_id, user.id)
        log.info("logout", extra={"user_id": user.id})

    def authenticate(self, token: str) -> User:
        """Return the active user a bearer token names.

        One indexed lookup by id per request: a removed or deactivated user, or a
        token issued before the user's last password change, is refused at once.

        Raises:
            InvalidTokenError: the token fails verification, its user is gone or
                inactive, or it was revoked.
        """
        return self.authenticate_claims(token)[0]

    def authenticate_claims(self, token: str) -> tuple[User, AccessClaims]:
        """Return the user and the verified claims of a bearer token.

        The user lookup also checks the token's session (one query), so a logout
        or a refresh-token reuse in any process refuses the token at once.

        Raises:
            InvalidTokenError: as `authenticate`.
        """
        claims = self._verified.get(token)
        if claims is None or claims.expires_at <= datetime.now(UTC):
            try:
                claims = self.tokens.verify_access_token(token)
            except InvalidTokenError:
                self.on_auth_failure("access_token_invalid")
                raise
            self._remember(token, claims)
        user, session_live = self.meta.get_user_in_session(
            claims.user_id, claims.session_id
        )
        if user is None:
            raise self._token_refused(
                "access_token_user", "access token refused: the user no longer exists"
            )
        if not user.active:
            raise self._token_refused(
                "access_token_user", "access token refused: the account is disabled"
            )
        if not session_live or claims.is_revoked_by(user.tokens_valid_after):
            raise self._token_refused(
                "access_token_revoked", "access token refused: it was revoked"
            )
        return user, claims

    def authorize(self, token: str, scope: str) -> User:
        """Return the user of a bearer token or API key that holds `scope`.

        Raises:
            InvalidTokenError: as `authenticate`, or an API key that is unknown,
                revoked, expired, or older than its account's last revocation.
            InsufficientScopeError: the token is valid but lacks `scope`, or
                `scope` is admin and the user is no longer an admin.
        """
        if is_api_key(token):
            user, scopes = self._check_api_key(token)
        else:
            user, claims = self.authenticate_claims(token)
            scopes = claims.scopes
        if scope not in scopes or scope not in ROLE_SCOPES[user.role]:
            raise InsufficientScopeError(scope)
        return user

    def create_api_key(
        self,
        user: User,
        claims: AccessClaims,
        request: ApiKeyRequest,
        *,
        expires_at: datetime,
        client: str = "unknown",
    ) -> tuple[str, ApiKey]:
        """Make a key for the session's user; return the key (shown once) and row.

        Raises:
            InvalidScopeError: the scope is malformed, or asks for more than the
                session's own scopes.
            PermissionDeniedError: the password is wrong (counted by the login
                throttle).
            TooManyRequestsError: while the name or the address must wait.
            TooManyApiKeysError: the account holds too many keys already.
        """
        scopes = parse_scopes(request.scope)
        self._recheck_password(user, request.password, client)
        if not scopes <= claims.scopes:
            missing = format_scopes(scopes - claims.scopes)
            raise InvalidScopeError(
                f"a key cannot have scopes this login lacks: {missing!r}"
            )
        key, key_id, digest = new_api_key()
        row = self.meta.api_keys.add(
            user.id, key_id, digest, name=request.name, scope=format_scopes(scopes),
            expires_at=expires_at,
        )
        if row is None:
            raise TooManyApiKeysError(
                f"an account holds at most {MAX_KEYS_PER_USER} keys; revoke one"
            )
        log.info("api_key_created", extra={"user_id": user.id, "key_id": key_id})
        return key, row

    def _recheck_password(self, user: User, password: str, client: str) -> None:
        # A signed-in person proving again that they know the password, before
        # something that outlives the session; throttled like a login.
        self._reserve_attempt(user.name, client)
        if not self.passwords.verify(user.password_hash, password).ok:
            self._login_refused(
                "password_recheck_failed", "bad_password", user.name, client
            )
            raise PermissionDeniedError("the password is wrong")
        self.throttle.succeeded(user.name, client)

    def _reserve_attempt(self, user_name: str, client: str) -> None:
        # Counted as failed before the slow hash runs, given back on success:
        # parallel guesses see each other (see strongroom.auth.throttle).
        try:
            self.throttle.check(user_name, client)
        except TooManyRequestsError:
            self._login_refused("login_failed", "throttled", user_name, client)
            raise
        self.throttle.failed(user_name, client)

    def authenticate_api_key(self, value: str) -> User:
        """Return the user of a valid API key.

        Raises:
            InvalidTokenError: the key is unknown, revoked, expired, or older
                than its account's last revocation.
        """
        return self._check_api_key(value)[0]

    def _check_api_key(self, value: str) -> tuple[User, frozenset[str]]:
        parts = split_api_key(value)
        found = self.meta.api_keys.lookup(parts[0]) if parts else None
        if parts is None or found is None:
            raise self._token_refused("api_key_unknown", "API key refused: unknown key")
        key, user = found
        if not digests_match(key.secret_hash, parts[1]):
            raise self._token_refused("api_key_unknown", "API key refused: unknown key")
        now = datetime.now(UTC)
        if key.revoked or (key.expires_at is not None and key.expires_at <= now):
            raise self._token_refused(
                "api_key_expired", "API key refused: revoked or expired"
            )
        if not user.active:
            raise self._token_refused(
                "api_key_revoked", "API key refused: the account is disabled"
            )
        if key.created < user.tokens_valid_after:
            raise self._token_refused(
                "api_key_revoked", "API key refused: it was revoked"
            )
        return user, parse_scopes(key.scope)

    def _token_refused(self, reason: str, message: str) -> InvalidTokenError:
        # `reason` is counted (a fixed word); `message` is what the client reads.
        self.on_auth_failure(reason)
        return InvalidTokenError(message)

    def _login_refused(
        self, event: str, reason: str, user_name: str, client: str
    ) -> None:
        self.on_auth_failure(reason)
        # The name only as a short keyed digest: people type passwords into it,
        # and a plain hash would give them away to anyone with a password list.
        # The same name gives the same digest, so repeated tries still show.
        key = self.tokens.keys.secret_for(_LOG_DIGEST_PURPOSE)
        digest = hmac.digest(key, user_name.encode("utf-8", "surrogatepass"), "sha256")
        log.warning(event, extra={"reason": reason, "client": client,
                                  "user_hash": digest.hex()[:16]})

    def _issue(
        self,
        user_id: int,
        session_id: str,
        refresh_token: str,
        scopes: frozenset[str],
    ) -> IssuedTokens:
        ttl = self.settings.token_ttl_seconds
        token = self.tokens.issue_access_token(user_id, ttl, session_id, scopes)
        return IssuedTokens(
            token.value, token.expires_in, refresh_token, format_scopes(scopes)
        )

    def _remember(self, token: str, claims: AccessClaims) -> None:
        # Only fully verified tokens get here, keyed by their exact string, and
        # an entry is used only until its exp: what it skips (syntax, key,
        # signature, types, aud, iss, lifetime) cannot change for the same string
        # while this process lives, since the key set is fixed at start-up. Time
        # (exp) is re-checked by the caller, and the user lookup with the session
        # and revocation checks runs on every request, cached or not. Clearing
        # the whole map when it is full bounds memory without an LRU.
        if len(self._verified) >= VERIFIED_TOKEN_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = claims

    def finish_interrupted_imports(self) -> None:
        """Finish the archive imports a killed process left half published; log them.

        Run once at start-up, before any request is served: until it has run, a
        directory space may show part of an archive.
        """
        for space in self.spaces.writable_directory_spaces():
            try:
                finished = finish_interrupted_imports(space)
            except (PathError, OSError) as exc:
                storage_log.warning("import_finish_failed",
                                    extra={"space": space.name, "reason": str(exc)})
                continue
            if finished:
                storage_log.info("interrupted_imports_finished",
                                 extra={"space": space.name, "imports": finished})

    def remove_staging_leftovers(self) -> None:
        """Sweep each writable directory space of what killed writes left; log it.

        Run once at start-up, in the background: a crash (or SIGKILL) in the middle
        of an upload or an import leaves hidden temporary names that no request can
        reach and nothing else removes.
        """
        for space in self.spaces.writable_directory_spaces():
            try:
                removed = space.remove_staging_leftovers()
            except OSError as exc:  # the space went away, or we are shutting down
                storage_log.warning("staging_sweep_failed",
                                    extra={"space": space.name, "reason": exc.strerror})
                continue
            if removed:
                storage_log.info("staging_leftovers_removed",
                                 extra={"space": space.name, "entries": removed})

    def close(self) -> None:
        """Release every root and connection."""
        self.spaces.close()
        self.blobs.close()
        self.meta.close()


def _granted_scopes(user: User, requested: frozenset[str] | None) -> frozenset[str]:
    held = ROLE_SCOPES[user.role]
    if requested is None:
        return held
    missing = requested - held
    if missing:
        raise InvalidScopeError(
            f"this account does not hold the scope {format_scopes(missing)!r}"
        )
    return requested


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
