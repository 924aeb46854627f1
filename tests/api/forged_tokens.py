"""Forged, altered and confused bearer tokens, built from the server's real ones.

The shapes follow the claims `strongroom.auth.tokens` writes: header
{"alg": "HS256", "typ": "at+jwt", "kid": ...} and claims sub (user id as text),
aud, iss, iat, exp, jti and iat_us. Tokens that should verify except for one
flaw are signed with the server's own secret (P/data/jwt.secret), so that flaw is
the only reason to refuse.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from pathlib import Path

import jwt

from strongroom.auth import KeySet

__all__ = [
    "AUDIENCE",
    "ISSUER",
    "UNKNOWN_USER_ID",
    "alg_none",
    "claims_for",
    "expired",
    "reencoded_signature",
    "server_secret",
    "signed",
    "tampered_sub",
    "user_id_of",
]

AUDIENCE = "strongroom"
ISSUER = "strongroom-auth"
TTL_SECONDS = 900
# A user id no fixture ever reaches.
UNKNOWN_USER_ID = 987654


def user_id_of(token: str) -> int:
    """Read the (unverified) user id from a token the server issued."""
    return int(_claims(token)["sub"])


def claims_for(user_id: int, *, issued_at: int | None = None) -> dict[str, object]:
    """Return valid claims for `user_id`, issued at `issued_at` (default: now)."""
    now = int(time.time()) if issued_at is None else issued_at
    return {
        "sub": str(user_id),
        "aud": AUDIENCE,
        "iss": ISSUER,
        "iat": now,
        "exp": now + TTL_SECONDS,
        "jti": secrets.token_urlsafe(16),
        "iat_us": now * 1_000_000,
    }


def signed(claims: dict[str, object], secret: bytes) -> str:
    """Sign `claims` with HS256 and our header, naming the secret's kid."""
    kid = KeySet.from_secret(secret).active.kid
    return jwt.encode(
        claims, secret, algorithm="HS256", headers={"typ": "at+jwt", "kid": kid}
    )


def server_secret(data_dir: Path) -> bytes:
    """Read the server's signing secret from its data directory."""
    return (data_dir / "jwt.secret").read_bytes()


def alg_none(token: str, alg: str = "none") -> str:
    """Return the token's claims under an unsigned header naming `alg`."""
    header = _segment({**_part(token, 0), "alg": alg})
    return f"{header}.{token.split('.')[1]}."


def expired(user_id: int, secret: bytes) -> str:
    """Return a correctly signed token whose `exp` passed an hour ago."""
    exp = int(time.time()) - 3600
    return signed(claims_for(user_id, issued_at=exp - TTL_SECONDS), secret)


def tampered_sub(token: str, user_id: int) -> str:
    """Return `token` with `sub` changed to `user_id` and the old signature kept."""
    header, _, signature = token.split(".")
    claims = {**_claims(token), "sub": str(user_id)}
    return f"{header}.{_segment(claims)}.{signature}"


def reencoded_signature(token: str) -> str:
    """Return `token` with the same signature bytes written another way.

    Standard-alphabet characters when the signature has '-' or '_', else padding.
    """
    head, signature = token.rsplit(".", 1)
    if "-" in signature or "_" in signature:
        return f"{head}.{signature.replace('-', '+').replace('_', '/')}"
    return f"{head}.{signature}="


def _claims(token: str) -> dict[str, object]:
    return _part(token, 1)


def _part(token: str, index: int) -> dict[str, object]:
    segment = token.split(".")[index]
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    value = json.loads(raw)
    assert isinstance(value, dict)
    return value


def _segment(value: dict[str, object]) -> str:
    raw = json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
