"""Access tokens: short-lived JWTs signed with HMAC-SHA256.

A token carries the header {"alg": "HS256", "typ": "at+jwt"} (RFC 9068) and the
claims `sub` (the user id, as a string), `aud` ("strongroom"), `iat`, `exp`, `jti`
and `iat_us`, the issue time in microseconds. `iat` has whole seconds only, too
coarse to tell a token issued just before a password change from one issued
just after it in the same second; `iat_us` tells them apart (see
`AccessClaims.is_revoked_by`).

Design note: verification does not trust PyJWT's parser alone. Before PyJWT sees
a token, `_check_structure` refuses, in order: a token over 4 KiB (so no large
input is decoded at all); anything but three canonical base64url segments
(padding, other alphabets and non-zero unused bits make different strings verify
as the same token); header or claims that are not strict UTF-8 JSON objects
(Python's json accepts UTF-16 and UTF-32 bytes, NaN and duplicate keys, where
the first or last duplicate may win depending on the reader); any header but
exactly ours; and claims of the wrong JSON type (PyJWT turns the string
"9999999999" into a number). PyJWT then checks the signature with the algorithm
pinned to HS256 and validates the times and the audience. Every failure,
whatever its exception, becomes AuthError with a short reason.

The signing secret is 64 random bytes in <data_dir>/jwt.secret, created on
first start with mode 0600; start-up stops if the file is shorter than 32 bytes,
readable by others, owned by another user or a symlink. Nothing here logs a
token or the secret.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import jwt

from strongroom.errors import AuthError, ConfigError

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "AUDIENCE",
    "MAX_TOKEN_BYTES",
    "MIN_SECRET_BYTES",
    "SECRET_FILE_NAME",
    "AccessClaims",
    "AccessToken",
    "TokenAuthority",
    "load_or_create_secret",
]

ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 (a media type, not a secret)
AUDIENCE = "strongroom"
# Our tokens are about 300 bytes; 4 KiB leaves room and bounds the decoding work
# an unauthenticated client can ask for (Authlib CVE-2025-61920 is this class).
MAX_TOKEN_BYTES = 4096
# HS256 needs a key of at least its hash size, 256 bits (RFC 7518, section 3.2).
MIN_SECRET_BYTES = 32
# New secrets fill one SHA-256 block; longer keys are hashed down anyway.
NEW_SECRET_BYTES = 64
# A secret file larger than this is not one of ours.
MAX_SECRET_BYTES = 4096
SECRET_FILE_NAME = "jwt.secret"  # noqa: S105 (a file name)

_ALGORITHM = "HS256"
_HEADER = {"alg": _ALGORITHM, "typ": ACCESS_TOKEN_TYPE}
_REQUIRED_CLAIMS = ["exp", "iat", "sub", "jti", "aud"]
_TIME_CLAIMS = ("exp", "iat", "iat_us", "nbf")
# 9999-12-31T23:59:59Z: no valid time lies beyond, and datetime cannot go there.
_MAX_SECONDS = 253402300799
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
# A user id as we write it: decimal, no sign, no leading zero, fits in 64 bits.
_USER_ID = re.compile(r"[1-9][0-9]{0,18}")


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """The verified content of an access token."""

    user_id: int
    token_id: str
    issued_at: datetime
    expires_at: datetime

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
    """Issue and verify access tokens with one HS256 secret. Thread-safe."""

    def __init__(
        self, secret: bytes, *, clock_ns: Callable[[], int] = time.time_ns
    ) -> None:
        """Keep `secret` for signing; `clock_ns` gives the issue time (tests).

        Raises:
            ConfigError: the secret is shorter than MIN_SECRET_BYTES.
        """
        _check_secret_strength(secret, "the signing secret")
        self._secret = secret
        self._clock_ns = clock_ns

    def issue_access_token(self, user_id: int, ttl_seconds: int) -> AccessToken:
        """Sign a token for `user_id` that expires after `ttl_seconds`.

        Raises:
            ValueError: `user_id` or `ttl_seconds` is below 1.
        """
        if user_id < 1 or ttl_seconds < 1:
            raise ValueError("user_id and ttl_seconds must be at least 1")
        now_us = self._clock_ns() // 1000
        issued_at = now_us // 1_000_000
        claims = AccessClaims(
            user_id=user_id,
            token_id=secrets.token_urlsafe(16),
            issued_at=_from_micros(now_us),
            expires_at=_from_micros((issued_at + ttl_seconds) * 1_000_000),
        )

        payload = {
            "sub": str(user_id),
            "aud": AUDIENCE,
            "iat": issued_at,
            "exp": issued_at + ttl_seconds,
            "jti": claims.token_id,
            "iat_us": now_us,
        }
        value = jwt.encode(payload, self._secret, algorithm=_ALGORITHM, headers=_HEADER)
        return AccessToken(value=value, expires_in=ttl_seconds, claims=claims)

    def verify_access_token(self, token: str) -> AccessClaims:
        """Return the claims of a valid access token.

        Checks the structure (see the module notes), the HS256 signature, the
        header, `exp` (no leeway: issuer and verifier share one clock), `iat`,
        `aud` and the presence and types of every claim. It does not look the
        user up: the caller checks that the user exists, is active, and that
        `is_revoked_by(user.tokens_valid_after)` is false.

        Raises:
            AuthError: for any failure, with a short reason; never another error.
        """
        if not isinstance(token, str):
            raise AuthError("access token refused: the token is malformed")
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthError("access token refused: the token is too long")
        return self._verify_unbounded(token)

    def _verify_unbounded(self, token: str) -> AccessClaims:
        # Everything behind the size gate; tests call it with larger input.
        try:
            payload = _check_structure(token)
            jwt.decode_complete(
                token,
                self._secret,
                algorithms=[_ALGORITHM],
                audience=AUDIENCE,
                options={"require": _REQUIRED_CLAIMS, "strict_aud": True},
            )
        except AuthError:
            raise
        except jwt.PyJWTError as exc:
            raise AuthError(f"access token refused: {_jwt_reason(exc)}") from None
        except (
            ValueError,
            TypeError,
            OverflowError,
            RecursionError,
            UnicodeError,
            binascii.Error,
        ):
            raise AuthError("access token refused: the token is malformed") from None
        return _claims_from(payload)


def load_or_create_secret(data_dir: Path) -> bytes:
    """Return the signing secret in `data_dir`, creating it on first start.

    A new secret is written to a private temporary file and linked into place,
    so the file appears whole or not at all, even with two processes starting.

    Raises:
        ConfigError: the file exists but is a symlink or not a regular file, is
            readable or writable by group or others, belongs to another user, or
            holds fewer than MIN_SECRET_BYTES bytes; or it cannot be created.
    """
    path = data_dir / SECRET_FILE_NAME
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass

    _create_secret(path)
    return _read_secret(path)


def _check_structure(token: str) -> dict[str, object]:
    """Refuse every token that is not shaped exactly like ours; see module notes.

    Returns the claims, unverified: only their JSON types have been checked.
    """
    if not token.isascii():
        raise AuthError("access token refused: the token is malformed")
    segments = token.split(".")
    if len(segments) != 3 or not all(_is_canonical_b64url(s) for s in segments):
        raise AuthError("access token refused: the token is malformed")

    header = _decode_json_object(segments[0])
    if header != _HEADER:
        raise AuthError("access token refused: the token header is not accepted")
    payload = _decode_json_object(segments[1])
    _check_claim_types(payload)
    return payload


def _check_claim_types(payload: dict[str, object]) -> None:
    for name in (*_REQUIRED_CLAIMS, "iat_us"):
        if name not in payload:
            raise AuthError(f"access token refused: the token lacks the {name!r} claim")
    for name in _TIME_CLAIMS:
        value = payload.get(name, 0)
        # bool is an int in Python, but `true` is no time in JSON.
        limit = _MAX_SECONDS * 1_000_000 if name == "iat_us" else _MAX_SECONDS
        if type(value) is not int or not 0 <= value <= limit:
            raise AuthError(f"access token refused: claim {name!r} is not a time")
    for name in ("jti", "aud"):
        if not isinstance(payload[name], str):
            raise AuthError(f"access token refused: claim {name!r} is not a string")
    sub = payload["sub"]
    if not isinstance(sub, str) or _USER_ID.fullmatch(sub) is None:
        raise AuthError("access token refused: claim 'sub' is not a user id")


def _claims_from(payload: dict[str, object]) -> AccessClaims:
    # Only called on verified claims whose types `_check_claim_types` checked.
    sub, jti, iat_us, exp = (payload[n] for n in ("sub", "jti", "iat_us", "exp"))
    assert isinstance(sub, str) and isinstance(jti, str)
    assert isinstance(iat_us, int) and isinstance(exp, int)
    return AccessClaims(
        user_id=int(sub),
        token_id=jti,
        issued_at=_from_micros(iat_us),
        expires_at=_from_micros(exp * 1_000_000),
    )


def _is_canonical_b64url(segment: str) -> bool:
    # Unpadded base64url whose last character carries no stray bits: decoding
    # and encoding again must give back the very same text.
    if _SEGMENT.fullmatch(segment) is None or len(segment) % 4 == 1:
        return False
    return _b64url_encode(_b64url_decode(segment)) == segment


def _b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode_json_object(segment: str) -> dict[str, object]:
    text = _b64url_decode(segment).decode("utf-8")  # strict: no UTF-16/32
    if text.startswith("\ufeff"):
        raise ValueError("a byte order mark is not JSON")
    value = json.loads(
        text, object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant
    )
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _refuse_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate member")
    return result


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _jwt_reason(exc: jwt.PyJWTError) -> str:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "the token has expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "the token is not valid yet"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "the token signature does not match"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "the token is meant for another service"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"the token lacks the {exc.claim!r} claim"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "the token algorithm is not accepted"
    return "the token is malformed"


def _from_micros(micros: int) -> datetime:
    seconds, rest = divmod(micros, 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest)


def _read_secret(path: Path) -> bytes:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ConfigError(
            f"signing secret {str(path)!r} cannot be opened ({exc.strerror}); it "
            "must be a regular file, not a symlink"
        ) from None
    try:
        _check_secret_file(path, os.fstat(fd))
        secret = os.read(fd, MAX_SECRET_BYTES + 1)
    finally:
        os.close(fd)

    _check_secret_strength(secret, f"signing secret {str(path)!r}")
    return secret


def _check_secret_file(path: Path, st: os.stat_result) -> None:
    shown = f"signing secret {str(path)!r}"
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{shown} is not a regular file")
    if st.st_mode & 0o077:
        raise ConfigError(
            f"{shown} has mode {st.st_mode & 0o777:04o}; others must not read it: "
            f"chmod 600 {str(path)!r}"
        )
    if st.st_uid != os.geteuid():
        raise ConfigError(f"{shown} belongs to another user; the service must own it")
    if st.st_size > MAX_SECRET_BYTES:
        raise ConfigError(f"{shown} is over {MAX_SECRET_BYTES} bytes; not a secret")


def _check_secret_strength(secret: bytes, shown: str) -> None:
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{shown} has {len(secret)} bytes; at least {MIN_SECRET_BYTES} random "
            "bytes are needed (delete the file to have a new one made)"
        )
    # A repeated pattern ("aaaa...") is long enough but no secret; even a hex
    # string uses 16 distinct byte values.
    if len(set(secret)) < 8:
        raise ConfigError(f"{shown} is a repeated pattern, not random bytes")


def _create_secret(path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o600)
        try:
            os.write(fd, secrets.token_bytes(NEW_SECRET_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        # link(2) refuses an existing name: the first process to start wins.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    except OSError as exc:
        raise ConfigError(
            f"signing secret {str(path)!r} cannot be created: {exc.strerror}"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
