"""Access tokens: short-lived JWTs, signed with the active key of a `KeySet`.

A token carries the header {"alg": <the key's algorithm>, "typ": "at+jwt",
"kid": <the key's kid>} (RFC 9068) and the claims `sub` (the user id, as a
string), `aud` ("strongroom"), `iss` ("strongroom-auth"), `iat`, `exp`, `jti` and
`iat_us`, the issue time in microseconds, and `sid`, the session (refresh-token
family) the token belongs to, so that a logout or a refresh-token reuse revokes
it. `iat` has whole seconds only, too coarse to tell a token issued just before a
password change from one issued just after it in the same second; `iat_us` tells
them apart (see `AccessClaims.is_revoked_by`).

Design note: a general JWT library decides too much from the token itself (the
algorithm, which claims to check, how to read numbers), and every such decision is
an attack surface (alg=none, HS/RS confusion, "9999999999" as an expiry). So the
verifier here is written out step by step, each step refusing before the next
one does any work, in this order:

1. a size gate: a token over 4 KiB is refused before it is decoded at all;
2. exactly three canonical base64url segments, ASCII only: no padding, no other
   alphabet, no stray bits (decode, encode again, compare), so no two strings
   verify as the same token;
3. a header that is a strict UTF-8 JSON object (no BOM, UTF-16/32, NaN or
   duplicate members) with no members but `alg`, `typ` and `kid`: `jku`, `x5u`,
   `x5c`, `jwk`, `crit`, `zip` and `enc` are refused, never followed;
4. `kid`: 16 base64url characters, looked up in the in-memory key set only; an
   unknown kid is refused, never a reason to read a file or reload;
5. `alg` equal to the algorithm of that key, exactly; the token never chooses
   the algorithm, so `none`, other HMAC sizes and HS/EdDSA confusion all fail;
6. `typ` exactly "at+jwt", so no other kind of token stands in for an access
   token;
7. the signature, with that key (constant-time for HMAC);
8. the claims: a strict JSON object; `exp`, `iat`, `iat_us` (and `nbf` when
   present) JSON integers, not booleans, in range; `sub` a user id; `jti` a short
   string; `sid` a session id; `aud` and `iss` single strings equal to ours; not
   expired and `iat` and `nbf` not in the future, with at most
   `MAX_LEEWAY_SECONDS` of leeway; a lifetime no longer than configured.

Every failure, whatever its exception (ValueError, TypeError, OverflowError,
RecursionError from deep JSON, UnicodeError, binascii.Error), becomes
`InvalidTokenError` with a short reason. The user lookup and revocation check are
the caller's (`Services.authenticate`). Nothing here logs a token or a key.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from strongroom.auth.keys import KID_PATTERN, KeySet, TokenKey
from strongroom.errors import InvalidTokenError

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
# Our tokens are about 350 bytes; 4 KiB leaves room and bounds the decoding work
# an unauthenticated client can ask for (Authlib CVE-2025-61920 is this class).
MAX_TOKEN_BYTES = 4096
# Clock skew tolerated between processes; RFC 7519 allows "a few minutes", the
# issue caps it at 10 s because every process shares one database and clock.
MAX_LEEWAY_SECONDS = 10
# A week, as config.MAX_TOKEN_TTL_SECONDS: the longest lifetime any setting allows.
DEFAULT_MAX_TTL_SECONDS = 7 * 24 * 3600

_HEADER_MEMBERS = frozenset({"alg", "typ", "kid"})
_REQUIRED_CLAIMS = ("exp", "iat", "sub", "jti", "aud", "iss", "iat_us", "sid")
# 9999-12-31T23:59:59Z: no valid time lies beyond, and datetime cannot go there.
_MAX_SECONDS = 253402300799
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
# A user id as we write it: decimal, no sign, no leading zero, fits in 64 bits.
_USER_ID = re.compile(r"[1-9][0-9]{0,18}")
# Our jti is 22 characters (16 random bytes); the bound keeps logs and caches small.
_MAX_JTI_CHARS = 64
# A session id as the metadata store writes it (22 base64url characters); the
# bound is the store's column width.
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{16,32}")
_PREFIX = "access token refused: "


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """The verified content of an access token."""

    user_id: int
    token_id: str
    issued_at: datetime
    expires_at: datetime
    session_id: str

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
        self._max_ttl = max_ttl_seconds
        self._leeway = leeway_seconds
        self._clock_ns = clock_ns

    def issue_access_token(
        self, user_id: int, ttl_seconds: int, session_id: str | None = None
    ) -> AccessToken:
        """Sign a token for `user_id` in `session_id` that expires after `ttl_seconds`.

        Without `session_id` the token gets a fresh random one that no session row
        backs, so `Services.authenticate` refuses it; only tests of this layer
        alone leave it out.

        Raises:
            ValueError: `user_id` or `ttl_seconds` is below 1, `ttl_seconds` is
                over the authority's maximum lifetime, or `session_id` is not a
                session id.
        """
        if user_id < 1 or not 1 <= ttl_seconds <= self._max_ttl:
            raise ValueError("user_id must be at least 1 and ttl_seconds in range")
        session_id = session_id or secrets.token_urlsafe(16)
        if SESSION_ID.fullmatch(session_id) is None:
            raise ValueError("session_id must be 16-32 base64url characters")
        now_us = self._clock_ns() // 1000
        issued_at = now_us // 1_000_000
        claims = AccessClaims(
            user_id=user_id,
            token_id=secrets.token_urlsafe(16),
            issued_at=_from_micros(now_us),
            expires_at=_from_micros((issued_at + ttl_seconds) * 1_000_000),
            session_id=session_id,
        )

        key = self.keys.active
        header = {"alg": key.algorithm, "typ": ACCESS_TOKEN_TYPE, "kid": key.kid}
        payload = {
            "sub": str(user_id),
            "aud": AUDIENCE,
            "iss": ISSUER,
            "iat": issued_at,
            "exp": issued_at + ttl_seconds,
            "jti": claims.token_id,
            "iat_us": now_us,
            "sid": session_id,
        }
        signing_input = f"{_encode_json(header)}.{_encode_json(payload)}"
        signature = _b64url_encode(key.sign(signing_input.encode("ascii")))
        value = f"{signing_input}.{signature}"
        return AccessToken(value=value, expires_in=ttl_seconds, claims=claims)

    def verify_access_token(self, token: str) -> AccessClaims:
        """Return the claims of a valid access token; see the module notes.

        It does not look the user up: the caller checks that the user exists, is
        active, and that `is_revoked_by(user.tokens_valid_after)` is false.

        Raises:
            InvalidTokenError: for any failure, with a short reason; never another
                error.
        """
        if not isinstance(token, str):
            raise InvalidTokenError(_PREFIX + "the token is malformed")
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidTokenError(_PREFIX + "the token is too long")
        return self._verify_unbounded(token)

    def public_jwks(self) -> dict[str, list[dict[str, str]]]:
        """Return the JWK Set of the public verification keys (empty for HMAC)."""
        return self.keys.public_jwks()

    def _verify_unbounded(self, token: str) -> AccessClaims:
        # Everything behind the size gate; tests call it with larger input.
        try:
            header_segment, payload_segment, signature = _split(token)
            key = self._key_for(_decode_json_object(header_segment))
            signing_input = f"{header_segment}.{payload_segment}".encode("ascii")
            if not key.is_valid_signature(signing_input, _b64url_decode(signature)):
                raise InvalidTokenError(_PREFIX + "the token signature does not match")
            return self._claims_from(_decode_json_object(payload_segment))
        except InvalidTokenError:
            raise
        except (
            ValueError,
            TypeError,
            OverflowError,
            RecursionError,
            UnicodeError,
            binascii.Error,
        ):
            raise InvalidTokenError(_PREFIX + "the token is malformed") from None

    def _key_for(self, header: dict[str, object]) -> TokenKey:
        """Return the key a header names, after checking every header member."""
        if not header.keys() <= _HEADER_MEMBERS:
            raise InvalidTokenError(_PREFIX + "the token header is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or KID_PATTERN.fullmatch(kid) is None:
            raise InvalidTokenError(_PREFIX + "the token header has no valid kid")
        key = self.keys.find(kid)
        if key is None:
            raise InvalidTokenError(_PREFIX + "the token names an unknown key")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg != key.algorithm:
            raise InvalidTokenError(_PREFIX + "the token algorithm is not accepted")
        if header.get("typ") != ACCESS_TOKEN_TYPE:
            raise InvalidTokenError(_PREFIX + "the token is not an access token")
        return key

    def _claims_from(self, payload: dict[str, object]) -> AccessClaims:
        """Check the verified claims' presence, types, values and times."""
        _check_claim_types(payload)
        if payload["aud"] != AUDIENCE:
            raise InvalidTokenError(_PREFIX + "the token is meant for another service")
        if payload["iss"] != ISSUER:
            raise InvalidTokenError(_PREFIX + "the token comes from another issuer")

        exp, iat, iat_us = (_int(payload[n]) for n in ("exp", "iat", "iat_us"))
        nbf = _int(payload.get("nbf", iat))
        now = self._clock_ns() // 1_000_000_000
        if now >= exp + self._leeway:
            raise InvalidTokenError(_PREFIX + "the token has expired")
        if max(iat, nbf) > now + self._leeway:
            raise InvalidTokenError(_PREFIX + "the token is not valid yet")
        if iat_us // 1_000_000 != iat:
            raise InvalidTokenError(_PREFIX + "claims 'iat' and 'iat_us' disagree")
        if not 0 < exp - iat <= self._max_ttl:
            raise InvalidTokenError(_PREFIX + "the token lifetime is not allowed")

        sub, jti, sid = (str(payload[n]) for n in ("sub", "jti", "sid"))
        return AccessClaims(
            user_id=int(sub),
            token_id=jti,
            issued_at=_from_micros(iat_us),
            expires_at=_from_micros(exp * 1_000_000),
            session_id=sid,
        )


def _split(token: str) -> tuple[str, str, str]:
    if not token.isascii():
        raise InvalidTokenError(_PREFIX + "the token is malformed")
    segments = token.split(".")
    if len(segments) != 3 or not all(_is_canonical_b64url(s) for s in segments):
        raise InvalidTokenError(_PREFIX + "the token is malformed")
    return segments[0], segments[1], segments[2]


def _check_claim_types(payload: dict[str, object]) -> None:
    for name in _REQUIRED_CLAIMS:
        if name not in payload:
            raise InvalidTokenError(_PREFIX + f"the token lacks the {name!r} claim")
    for name in ("exp", "iat", "iat_us", "nbf"):
        value = payload.get(name, 0)
        # bool is an int in Python, but `true` is no time in JSON.
        limit = _MAX_SECONDS * 1_000_000 if name == "iat_us" else _MAX_SECONDS
        if type(value) is not int or not 0 <= value <= limit:
            raise InvalidTokenError(_PREFIX + f"claim {name!r} is not a time")
    for name in ("aud", "iss"):
        if not isinstance(payload[name], str):
            raise InvalidTokenError(_PREFIX + f"claim {name!r} is not a string")
    jti = payload["jti"]
    if not isinstance(jti, str) or not 0 < len(jti) <= _MAX_JTI_CHARS:
        raise InvalidTokenError(_PREFIX + "claim 'jti' is not a token id")
    sid = payload["sid"]
    if not isinstance(sid, str) or SESSION_ID.fullmatch(sid) is None:
        raise InvalidTokenError(_PREFIX + "claim 'sid' is not a session id")
    sub = payload["sub"]
    if not isinstance(sub, str) or _USER_ID.fullmatch(sub) is None:
        raise InvalidTokenError(_PREFIX + "claim 'sub' is not a user id")


def _int(value: object) -> int:
    # Only called after `_check_claim_types` proved the type.
    assert type(value) is int
    return value


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


def _encode_json(value: Mapping[str, object]) -> str:
    return _b64url_encode(json.dumps(value, separators=(",", ":")).encode())


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


def _from_micros(micros: int) -> datetime:
    seconds, rest = divmod(micros, 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest)
