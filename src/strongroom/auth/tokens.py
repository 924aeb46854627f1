"""Access tokens: short-lived JWTs, signed with the active key of a `KeySet`.

A token carries the header {"alg": <the key's algorithm>, "typ": "at+jwt",
"kid": <the key's kid>} (RFC 9068) and the claims `sub` (the user id, as a
string), `aud` ("strongroom"), `iss` ("strongroom-auth"), `iat`, `exp`, `jti`,
`scope` (the scopes granted, space-separated, see `strongroom.auth.scopes`),
`iat_us`, the issue time in microseconds, and `sid`, the session (refresh-token
family) the token belongs to, so that a logout or a refresh-token reuse revokes
it. `iat` has whole seconds only, too coarse to tell a token issued just before a
password change from one issued just after it in the same second; `iat_us` tells
them apart (see `AccessClaims.is_revoked_by`).

The form, header, key and signature are checked by `strongroom.auth._jws` (its
module notes give the order); the claims here: a strict JSON object; `exp`,
`iat`, `iat_us` (and `nbf` when present) JSON integers, not booleans, in range;
`sub` a user id; `jti` a short string; `sid` a session id; `scope` known scopes;
`aud` and `iss` single strings equal to ours; not expired and `iat` and `nbf` not
in the future, with at most `MAX_LEEWAY_SECONDS` of leeway; a lifetime no longer
than configured. The user lookup and revocation check are the caller's
(`Services.authenticate`). Nothing here logs a token or a key.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from strongroom.auth._jws import (
    MAX_TIME_SECONDS,
    MAX_TOKEN_BYTES,
    SignedTokenCodec,
    TimeRules,
    check_string,
    from_micros,
)
from strongroom.auth.keys import KeySet
from strongroom.auth.scopes import ALL_SCOPES, format_scopes, parse_scopes
from strongroom.errors import InvalidScopeError

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "AUDIENCE",
    "ISSUER",
    "MAX_LEEWAY_SECONDS",
    "MAX_TOKEN_BYTES",
    "AccessClaims",
    "AccessToken",
    "TokenAuthority",
]

ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 (a media type, not a secret)
AUDIENCE = "strongroom"
ISSUER = "strongroom-auth"
# Clock skew tolerated between processes; RFC 7519 allows "a few minutes", the
# issue caps it at 10 s because every process shares one database and clock.
MAX_LEEWAY_SECONDS = 10
# A week, as config.MAX_TOKEN_TTL_SECONDS: the longest lifetime any setting allows.
DEFAULT_MAX_TTL_SECONDS = 7 * 24 * 3600

_REQUIRED_CLAIMS = ("sub", "jti", "aud", "iss", "iat_us", "sid", "scope")
# A user id as we write it: decimal, no sign, no leading zero, and at most
# MAX_USER_ID, the largest id the `users.id` column holds on every database
# (PostgreSQL's INTEGER is 32 bits). A larger signed id had made the lookup
# itself fail: with 19 digits on SQLite, with 11 on PostgreSQL.
_USER_ID = re.compile(r"[1-9][0-9]{0,9}")
MAX_USER_ID = 2**31 - 1
# Our jti is 22 characters (16 random bytes); the bound keeps logs and caches small.
_JTI = re.compile(r"[\x21-\x7e]{1,64}")
# A session id as the metadata store writes it (22 base64url characters); the
# bound is the store's column width.
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{16,32}")


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """The verified content of an access token."""

    user_id: int
    token_id: str
    issued_at: datetime
    expires_at: datetime
    session_id: str
    scopes: frozenset[str] = ALL_SCOPES

    def is_revoked_by(self, tokens_valid_after: datetime) -> bool:
        """Return whether a revocation at `tokens_valid_after` kills this token.

        Compared to the microsecond: a token issued after a password change, even
        within the same second, stays valid; one issued before it does not.
        """
        return self.issued_at < tokens_valid_after


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A freshly issued token; `value` is left out of `repr` so it is never logged."""

    value: str = field(repr=False)
    expires_in: int
    claims: AccessClaims


class TokenAuthority:
    """Issue and verify access tokens with one key set. Thread-safe."""

    def __init__(
        self,
        keys: KeySet,
        *,
        max_ttl_seconds: int = DEFAULT_MAX_TTL_SECONDS,
        leeway_seconds: int = 0,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        """Sign with `keys.active`, verify with any of `keys`.

        `max_ttl_seconds` bounds the lifetime (exp - iat) of a token both ways:
        none is issued or accepted with a longer one. `clock_ns` is the clock for
        issuing and checking times (tests).

        Raises:
            ValueError: `leeway_seconds` is outside 0..MAX_LEEWAY_SECONDS or
                `max_ttl_seconds` is below 1.
        """
        if not 0 <= leeway_seconds <= MAX_LEEWAY_SECONDS or max_ttl_seconds < 1:
            raise ValueError("leeway must be 0-10 s and the lifetime at least 1 s")
        self.keys = keys
        self._codec = SignedTokenCodec(keys, ACCESS_TOKEN_TYPE, "access token")
        self._times = TimeRules(self._codec, max_ttl_seconds, leeway_seconds)
        self._max_ttl = max_ttl_seconds
        self._clock_ns = clock_ns

    def issue_access_token(
        self,
        user_id: int,
        ttl_seconds: int,
        session_id: str | None = None,
        scopes: Iterable[str] = ALL_SCOPES,
    ) -> AccessToken:
        """Sign a token for `user_id` in `session_id` that expires after `ttl_seconds`.

        Without `session_id` the token gets a fresh random one that no session row
        backs, so `Services.authenticate` refuses it; only tests of this layer
        alone leave it out. `scopes` are granted as given: the caller has already
        limited them to what the user's role holds.

        Raises:
            ValueError: `user_id` or `ttl_seconds` is below 1, `ttl_seconds` is
                over the authority's maximum lifetime, `session_id` is not a
                session id, or `scopes` is empty or names an unknown scope.
        """
        if user_id < 1 or not 1 <= ttl_seconds <= self._max_ttl:
            raise ValueError("user_id must be at least 1 and ttl_seconds in range")
        session_id = session_id or secrets.token_urlsafe(16)
        if SESSION_ID.fullmatch(session_id) is None:
            raise ValueError("session_id must be 16-32 base64url characters")
        scope = format_scopes(scopes)
        if not scope or not set(scopes) <= ALL_SCOPES:
            raise ValueError(f"scopes must be some of {sorted(ALL_SCOPES)}")
        now_us = self._clock_ns() // 1000
        issued_at = now_us // 1_000_000
        claims = AccessClaims(
            user_id=user_id,
            token_id=secrets.token_urlsafe(16),
            issued_at=from_micros(now_us),
            expires_at=from_micros((issued_at + ttl_seconds) * 1_000_000),
            session_id=session_id,
            scopes=frozenset(scope.split(" ")),
        )

        value = self._codec.encode(
            {
                "sub": str(user_id),
                "aud": AUDIENCE,
                "iss": ISSUER,
                "iat": issued_at,
                "exp": issued_at + ttl_seconds,
                "jti": claims.token_id,
                "iat_us": now_us,
                "sid": session_id,
                "scope": scope,
            }
        )
        return AccessToken(value=value, expires_in=ttl_seconds, claims=claims)

    def verify_access_token(self, token: str) -> AccessClaims:
        """Return the claims of a valid access token; see the module notes.

        It does not look the user up: the caller checks that the user exists, is
        active, and that `is_revoked_by(user.tokens_valid_after)` is false.

        Raises:
            InvalidTokenError: for any failure, with a short reason; never another
                error.
        """
        return self._claims_from(self._codec.decode(token))

    def public_jwks(self) -> dict[str, list[dict[str, str]]]:
        """Return the JWK Set of the public verification keys (empty for HMAC)."""
        return self.keys.public_jwks()

    def _verify_unbounded(self, token: str) -> AccessClaims:
        # Everything behind the size gate; tests call it with larger input.
        return self._claims_from(self._codec.decode_unbounded(token))

    def _claims_from(self, payload: dict[str, object]) -> AccessClaims:
        """Check the verified claims' presence, types, values and times."""
        refused = self._codec.refused
        for name in _REQUIRED_CLAIMS:
            if name not in payload:
                raise refused(f"the token lacks the {name!r} claim")
        iat, exp = self._times.check(payload, self._clock_ns() // 1_000_000_000)
        iat_us = payload["iat_us"]
        if type(iat_us) is not int or not 0 <= iat_us <= MAX_TIME_SECONDS * 10**6:
            raise refused("claim 'iat_us' is not a time")
        if iat_us // 1_000_000 != iat:
            raise refused("claims 'iat' and 'iat_us' disagree")
        if payload["aud"] != AUDIENCE:
            raise refused("the token is meant for another service")
        if payload["iss"] != ISSUER:
            raise refused("the token comes from another issuer")

        user_id = int(check_string(self._codec, payload, "sub", _USER_ID))
        if user_id > MAX_USER_ID:
            raise refused("claim 'sub' is not a user id")
        return AccessClaims(
            user_id=user_id,
            token_id=check_string(self._codec, payload, "jti", _JTI),
            issued_at=from_micros(iat_us),
            expires_at=from_micros(exp * 1_000_000),
            session_id=check_string(self._codec, payload, "sid", SESSION_ID),
            scopes=self._scopes_from(payload["scope"]),
        )

    def _scopes_from(self, value: object) -> frozenset[str]:
        if not isinstance(value, str):
            raise self._codec.refused("claim 'scope' is not a string")
        try:
            return parse_scopes(value)
        except InvalidScopeError:
            raise self._codec.refused("claim 'scope' names unknown scopes") from None
