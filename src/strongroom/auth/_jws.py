"""Compact JWS for our own tokens: sign, and verify strictly, one step at a time.

Every kind of token we issue (access tokens, share links) goes through a
`SignedTokenCodec` bound to one key set and one `typ`. A general JWT library
decides too much from the token itself (the algorithm, which claims to check,
how to read numbers), and every such decision is an attack surface (alg=none,
HS/EdDSA confusion, "9999999999" as an expiry). So verification is written out
here, each step refusing before the next one does any work:

1. a size gate: a token over `MAX_TOKEN_BYTES` is refused before it is decoded;
2. exactly three canonical base64url segments, ASCII only: no padding, no other
   alphabet, no stray bits (decode, encode again, compare), so no two strings
   verify as the same token;
3. a header that is a strict UTF-8 JSON object (no BOM, UTF-16/32, NaN or
   duplicate members) with no members but `alg`, `typ` and `kid`: `jku`, `x5u`,
   `x5c`, `jwk`, `crit`, `zip` and `enc` are refused, never followed;
4. `kid`: 16 base64url characters, looked up in the in-memory key set only; an
   unknown kid is refused, never a reason to read a file or reload;
5. `alg` equal to the algorithm of that key, exactly; the token never chooses
   the algorithm;
6. `typ` exactly the codec's, so no kind of token stands in for another (each
   kind also has its own keys, see `KeySet.derive`);
7. the signature, with that key (constant-time for HMAC);
8. the payload: a strict JSON object, handed to the kind's own claim checks,
   which can use `check_times` and `check_string` from here.

Every failure, whatever its exception, becomes `InvalidTokenError` with a short
reason prefixed by the kind ("access token refused: ..."). Nothing here logs a
token or a key.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime

from strongroom.auth.keys import KID_PATTERN, KeySet, TokenKey
from strongroom.errors import InvalidTokenError

__all__ = [
    "MAX_TIME_SECONDS",
    "MAX_TOKEN_BYTES",
    "SignedTokenCodec",
    "TimeRules",
    "check_string",
    "from_micros",
]

# Our tokens are about 400 bytes; 4 KiB leaves room and bounds the decoding work
# an unauthenticated client can ask for (Authlib CVE-2025-61920 is this class).
MAX_TOKEN_BYTES = 4096
# 9999-12-31T23:59:59Z: no valid time lies beyond, and datetime cannot go there.
MAX_TIME_SECONDS = 253402300799

_HEADER_MEMBERS = frozenset({"alg", "typ", "kid"})
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_MALFORMED = (
    ValueError,
    TypeError,
    OverflowError,
    RecursionError,
    UnicodeError,
    binascii.Error,
)


class SignedTokenCodec:
    """Sign payloads as one kind of token and verify tokens of that kind only."""

    def __init__(self, keys: KeySet, token_type: str, kind: str) -> None:
        """Sign with `keys.active`, verify with any of `keys`, typed `token_type`.

        `kind` names the token in refusals ("access token", "share link").
        """
        self.keys = keys
        self.token_type = token_type
        self.kind = kind

    def encode(self, payload: Mapping[str, object]) -> str:
        """Return the compact JWS of `payload`, signed with the active key."""
        key = self.keys.active
        header = {"alg": key.algorithm, "typ": self.token_type, "kid": key.kid}
        signing_input = f"{_encode_json(header)}.{_encode_json(payload)}"
        signature = _b64url_encode(key.sign(signing_input.encode("ascii")))
        return f"{signing_input}.{signature}"

    def decode(self, token: object) -> dict[str, object]:
        """Return the payload of a token whose form, header and signature are valid.

        The claims are not checked here; see the module notes.

        Raises:
            InvalidTokenError: for any failure, with a short reason.
        """
        if not isinstance(token, str):
            raise self.refused("the token is malformed")
        if len(token) > MAX_TOKEN_BYTES:
            raise self.refused("the token is too long")
        return self.decode_unbounded(token)

    def decode_unbounded(self, token: str) -> dict[str, object]:
        """Everything `decode` does behind the size gate (tests call it directly)."""
        try:
            header_segment, payload_segment, signature = self._split(token)
            key = self._key_for(_decode_json_object(header_segment))
            signing_input = f"{header_segment}.{payload_segment}".encode("ascii")
            if not key.is_valid_signature(signing_input, _b64url_decode(signature)):
                raise self.refused("the token signature does not match")
            return _decode_json_object(payload_segment)
        except InvalidTokenError:
            raise
        except _MALFORMED:
            raise self.refused("the token is malformed") from None

    def refused(self, reason: str) -> InvalidTokenError:
        """Return the error for a token of this kind refused for `reason`."""
        return InvalidTokenError(f"{self.kind} refused: {reason}")

    def _split(self, token: str) -> tuple[str, str, str]:
        if not token.isascii():
            raise self.refused("the token is malformed")
        segments = token.split(".")
        if len(segments) != 3 or not all(_is_canonical_b64url(s) for s in segments):
            raise self.refused("the token is malformed")
        return segments[0], segments[1], segments[2]

    def _key_for(self, header: dict[str, object]) -> TokenKey:
        """Return the key a header names, after checking every header member."""
        if not header.keys() <= _HEADER_MEMBERS:
            raise self.refused("the token header is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or KID_PATTERN.fullmatch(kid) is None:
            raise self.refused("the token header has no valid kid")
        key = self.keys.find(kid)
        if key is None:
            raise self.refused("the token names an unknown key")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg != key.algorithm:
            raise self.refused("the token algorithm is not accepted")
        if header.get("typ") != self.token_type:
            raise self.refused(f"the token is not of type {self.token_type!r}")
        return key


class TimeRules:
    """How `exp`, `iat` and `nbf` are checked for one kind of token."""

    def __init__(self, codec: SignedTokenCodec, max_ttl: int, leeway: int) -> None:
        self._codec = codec
        self._max_ttl = max_ttl
        self._leeway = leeway

    def check(self, payload: Mapping[str, object], now: int) -> tuple[int, int]:
        """Return (iat, exp) after checking their types, order and the clock.

        `exp` and `iat` are required JSON integers (not booleans, not strings);
        `nbf` is optional. Within the leeway the token must not have expired and
        `iat` and `nbf` must not lie in the future; the lifetime `exp - iat` must
        be positive and at most the maximum.

        Raises:
            InvalidTokenError: naming the first claim that failed.
        """
        for name in ("exp", "iat"):
            if name not in payload:
                raise self._codec.refused(f"the token lacks the {name!r} claim")
        exp, iat = self._seconds(payload, "exp"), self._seconds(payload, "iat")
        nbf = self._seconds(payload, "nbf") if "nbf" in payload else iat

        if now >= exp + self._leeway:
            raise self._codec.refused("the token has expired")
        if max(iat, nbf) > now + self._leeway:
            raise self._codec.refused("the token is not valid yet")
        if not 0 < exp - iat <= self._max_ttl:
            raise self._codec.refused("the token lifetime is not allowed")
        return iat, exp

    def _seconds(self, payload: Mapping[str, object], name: str) -> int:
        value = payload[name]
        # bool is an int in Python, but `true` is no time in JSON.
        if type(value) is not int or not 0 <= value <= MAX_TIME_SECONDS:
            raise self._codec.refused(f"claim {name!r} is not a time")
        return value


def check_string(
    codec: SignedTokenCodec,
    payload: Mapping[str, object],
    name: str,
    pattern: re.Pattern[str],
) -> str:
    """Return the required string claim `name` if it matches `pattern` whole.

    Raises:
        InvalidTokenError: the claim is missing, not a string or malformed.
    """
    if name not in payload:
        raise codec.refused(f"the token lacks the {name!r} claim")
    value = payload[name]
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise codec.refused(f"claim {name!r} is not valid")
    return value


def from_micros(micros: int) -> datetime:
    """Return the UTC time `micros` microseconds after the epoch."""
    seconds, rest = divmod(micros, 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest)


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
