"""Share links behind the routes: the signed token in a link, and every check.

Token. A link is `/s/<token>`, where the token is a compact JWS made and checked
by `strongroom.auth._jws` (its module notes give the order of the checks) with
`typ` "share+jwt" and keys of their own (`KeySet.derive("share")`), so an access
token never verifies as a share token and a share token never as an access
token. The claims are exactly `shr` (the share row's random id), `aud`
("strongroom-share"), `iss`, `iat`, `exp` and `perm` ("read"); any other claim is
refused. The token only names the row: revocation, expiry, the download count
and the target all live in the row, which one primary-key query reads.

Answers. A token that is not one of ours (malformed, forged, tampered, another
kind of token, an unknown key) is a 404: no such link, and the holder learns
nothing more. A genuine link that has ended (expired, revoked, used up, its owner
gone or disabled or no longer allowed in the space, its target deleted or
replaced) is a 410 with one message for every cause. A password-protected link
without its password, or with a wrong one, is a 401 asking for Basic
credentials; wrong passwords are throttled per share and per client address
(429 with Retry-After, never a permanent lockout). Each refusal is logged as a
warning with its reason, never with the token or the password.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NoReturn

from strongroom.api.services import Services
from strongroom.auth import KeySet, PasswordHasher
from strongroom.auth._jws import SignedTokenCodec, TimeRules, check_string
from strongroom.auth.throttle import THROTTLE_KEY_PURPOSE, LoginThrottle
from strongroom.auth.tokens import ISSUER
from strongroom.errors import (
    InvalidShareError,
    InvalidTokenError,
    ShareGoneError,
    ShareNotFoundError,
    SharePasswordError,
    SpaceNotFoundError,
    TooManyRequestsError,
)
from strongroom.storage import User
from strongroom.storage.registry import SpaceRegistry
from strongroom.storage.shares import (
    SHARE_GONE,
    ShareOwner,
    ShareRecord,
    ShareStore,
    identify_target,
)
from strongroom.storage.spaces import Space

__all__ = [
    "DEFAULT_SHARE_TTL_SECONDS",
    "MAX_DOWNLOAD_LIMIT",
    "SHARE_AUDIENCE",
    "SHARE_TOKEN_TYPE",
    "IssuedShare",
    "OpenedShare",
    "ShareService",
    "ShareTokens",
]

log = logging.getLogger("strongroom.shares")

SHARE_TOKEN_TYPE = "share+jwt"  # noqa: S105 (a media type, not a secret)
SHARE_AUDIENCE = "strongroom-share"
SHARE_PERMISSION = "read"
# Issue #4: a link lives a week unless its creator asks otherwise.
DEFAULT_SHARE_TTL_SECONDS = 7 * 24 * 3600
# A download limit above this is no limit anyone means; it also keeps the
# counter far from any integer column's end.
MAX_DOWNLOAD_LIMIT = 1_000_000

_CLAIMS = frozenset({"shr", "aud", "iss", "iat", "exp", "perm"})
# A share id as `ShareStore.create` makes it: 16 random bytes, base64url.
_SHARE_ID = re.compile(r"[A-Za-z0-9_-]{22}")
_NO_SUCH_LINK = "there is no share link here"


@dataclass(frozen=True, slots=True)
class IssuedShare:
    """A new share and the token of its link; the token is kept out of `repr`."""

    record: ShareRecord
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class OpenedShare:
    """A live share whose password (if any) was given, and its owner's space."""

    record: ShareRecord
    space: Space


class ShareTokens:
    """Issue and verify share-link tokens with one derived key set. Thread-safe."""

    def __init__(
        self,
        keys: KeySet,
        *,
        max_ttl_seconds: int,
        leeway_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Sign with `keys.active` (already derived for share links).

        `max_ttl_seconds` bounds `exp - iat` of every token accepted.
        """
        self._codec = SignedTokenCodec(keys, SHARE_TOKEN_TYPE, "share link")
        self._times = TimeRules(self._codec, max_ttl_seconds, leeway_seconds)
        self._clock = clock

    def issue(self, share_id: str, issued_at: int, expires_at: int) -> str:
        """Return the token of share `share_id`; the times are Unix seconds."""
        return self._codec.encode({
            "shr": share_id,
            "aud": SHARE_AUDIENCE,
            "iss": ISSUER,
            "iat": issued_at,
            "exp": expires_at,
            "perm": SHARE_PERMISSION,
        })

    def verify(self, token: str) -> str:
        """Return the share id a genuine, unexpired share token names.

        Raises:
            InvalidTokenError: the token is not a share token of ours, or its
                claims are malformed.
            ShareGoneError: the token is genuine but its `exp` has passed.
        """
        payload = self._codec.decode(token)
        refused = self._codec.refused
        if payload.keys() != _CLAIMS:
            raise refused("the token does not carry exactly the share claims")

        now = int(self._clock())
        exp = payload["exp"]
        if type(exp) is int and now >= exp:
            # The signature held, so this is a real link that has ended.
            raise ShareGoneError(SHARE_GONE)
        self._times.check(payload, now)
        if payload["aud"] != SHARE_AUDIENCE or payload["iss"] != ISSUER:
            raise refused("the token is meant for another audience")
        if payload["perm"] != SHARE_PERMISSION:
            raise refused("the token grants a permission links never have")
        return check_string(self._codec, payload, "shr", _SHARE_ID)


class ShareService:
    """Create, list, revoke and open share links. Thread-safe.

    Built once by the app from its `Services`; see the module notes for what
    each refusal answers.
    """

    def __init__(
        self,
        store: ShareStore,
        spaces: SpaceRegistry,
        passwords: PasswordHasher,
        tokens: ShareTokens,
        throttle: LoginThrottle,
        *,
        max_ttl_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._spaces = spaces
        self._passwords = passwords
        self._tokens = tokens
        self._throttle = throttle
        self._max_ttl = max_ttl_seconds
        self._clock = clock

    @classmethod
    def open(cls, services: Services) -> ShareService:
        """Build the service on the app's database, spaces, keys and hasher.

        Wrong share passwords are counted in the same database table as failed
        logins, under keys of their own, so every app process sees them.
        """
        settings = services.settings
        tokens = ShareTokens(
            services.tokens.keys.derive("share"),
            max_ttl_seconds=settings.share_max_ttl_seconds,
            leeway_seconds=settings.token_leeway_seconds,
        )
        return cls(
            ShareStore.of(services.meta),
            services.spaces,
            services.passwords,
            tokens,
            LoginThrottle(
                services.meta.login_failures,
                key=services.tokens.keys.secret_for(THROTTLE_KEY_PURPOSE),
            ),
            max_ttl_seconds=settings.share_max_ttl_seconds,
        )

    def create(
        self,
        user: User,
        space_name: str,
        rel_path: str,
        *,
        expires_in: int | None = None,
        password: str | None = None,
        max_downloads: int | None = None,
    ) -> IssuedShare:
        """Share a file or folder that `user` can read, and return its link.

        Raises:
            InvalidShareError: `expires_in` or `max_downloads` is out of range.
            SpaceNotFoundError: the user may not use the space.
            PathError: the path cannot be read in the space (404, 403...).
            PasswordPolicyError: the password breaks the account password rules.
        """
        ttl = self._lifetime(expires_in)
        if max_downloads is not None and not 1 <= max_downloads <= MAX_DOWNLOAD_LIMIT:
            raise InvalidShareError(
                f"max_downloads = {max_downloads} is out of range; use 1 to "
                f"{MAX_DOWNLOAD_LIMIT}, or leave it out for no limit"
            )
        target = identify_target(self._spaces.get(user, space_name), rel_path)
        password_hash = None if password is None else self._passwords.hash(password)

        issued_at = int(self._clock())
        record = self._store.create(
            ShareOwner(user.id, user.name, user.role, user.active),
            target,
            password_hash=password_hash,
            max_downloads=max_downloads,
            created=_utc(self._clock()),
            expires_at=_utc(issued_at + ttl),
        )
        token = self._tokens.issue(record.id, issued_at, issued_at + ttl)
        log.info("share_created", extra={
            "share_id": record.id, "user_id": user.id, "space": target.space,
            "rel_path": target.rel_path, "kind": target.kind, "ttl_s": ttl,
        })
        return IssuedShare(record, token)

    def list_for(self, user: User) -> list[ShareRecord]:
        """Return the user's shares, newest first (see `MAX_LISTED_SHARES`)."""
        return self._store.list_for(user.id)

    def revoke(self, user: User, share_id: str) -> None:
        """Revoke one of the user's shares; revoking twice is fine.

        Raises:
            ShareNotFoundError: the user has no share with this id.
        """
        if _SHARE_ID.fullmatch(share_id) is None or not self._store.revoke(
            user.id, share_id
        ):
            raise ShareNotFoundError(f"you have no share with id {share_id[:32]!r}")
        log.info("share_revoked", extra={"share_id": share_id, "user_id": user.id})

    def open_link(self, token: str, password: str | None, client: str) -> OpenedShare:
        """Check a link and its password; return the share and its owner's space.

        The target itself is reached afterwards, through `storage.shares`.

        Raises:
            ShareNotFoundError: the token is not a share token of ours.
            ShareGoneError: the link has ended (see the module notes).
            SharePasswordError: a password is needed and missing or wrong.
            TooManyRequestsError: too many wrong passwords lately.
        """
        record = self._live_record(token)
        if record.password_hash is not None:
            self._check_password(record, password, client)
        try:
            space = self._spaces.get(record.owner, record.target.space)
        except SpaceNotFoundError:
            self._refuse_gone(record, "space")
        return OpenedShare(record, space)

    def count_download(self, record: ShareRecord) -> None:
        """Count one download of the share, atomically against its limit.

        Raises:
            ShareGoneError: the limit is reached, or the link ended meanwhile.
        """
        if not self._store.count_download(record.id, _utc(self._clock())):
            self._refuse_gone(record, "used_up")

    def _live_record(self, token: str) -> ShareRecord:
        try:
            share_id = self._tokens.verify(token)
        except InvalidTokenError as exc:
            log.warning("share_refused", extra={"reason": str(exc)})
            raise ShareNotFoundError(_NO_SUCH_LINK) from None
        except ShareGoneError:
            log.warning("share_refused", extra={"reason": "token_expired"})
            raise
        record = self._store.get(share_id)
        if record is None:
            log.warning("share_refused", extra={"share_id": share_id,
                                                "reason": "no_row"})
            raise ShareGoneError(SHARE_GONE)
        if not record.owner.active:
            self._refuse_gone(record, "owner_inactive")
        if not record.is_live(_utc(self._clock())):
            self._refuse_gone(record, "ended")
        return record

    def _check_password(
        self, record: ShareRecord, password: str | None, client: str
    ) -> None:
        if password is None:
            raise SharePasswordError(
                "this share link needs its password (HTTP Basic, any user name)"
            )
        # Keys of their own: "share:" never starts a user name, and the address
        # key is apart from the login throttle's.
        share_key, client_key = f"share:{record.id}", f"share-client:{client}"
        try:
            self._throttle.check(share_key, client_key)
        except TooManyRequestsError as exc:
            log.warning("share_password_throttled", extra={"share_id": record.id})
            raise TooManyRequestsError(
                "too many wrong passwords for this share link; wait and try again",
                retry_after=exc.retry_after,
            ) from None
        # Counted before the slow hash, given back when right (as for logins).
        self._throttle.failed(share_key, client_key)
        if not self._passwords.verify(record.password_hash, password).ok:
            log.warning("share_password_failed", extra={"share_id": record.id})
            raise SharePasswordError("wrong password for this share link")
        self._throttle.succeeded(share_key, client_key)

    def _lifetime(self, expires_in: int | None) -> int:
        if expires_in is None:
            return min(DEFAULT_SHARE_TTL_SECONDS, self._max_ttl)
        if not 1 <= expires_in <= self._max_ttl:
            raise InvalidShareError(
                f"expires_in = {expires_in} is out of range; use 1 to "
                f"{self._max_ttl} seconds (share_max_ttl_seconds)"
            )
        return expires_in

    def _refuse_gone(self, record: ShareRecord, reason: str) -> NoReturn:
        log.warning("share_refused", extra={"share_id": record.id, "reason": reason})
        raise ShareGoneError(SHARE_GONE)


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
