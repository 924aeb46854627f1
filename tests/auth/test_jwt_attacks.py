"""Every case of tests/data/jwt-attacks.json, built against the token layer.

Each case id maps to named variants; a variant builds one hostile token from a
fresh valid one (or from the real key, for "key-holder" variants) and the token
authority must refuse it with InvalidTokenError, never another error. Every
variant runs against an HS256 key set and an EdDSA one. Cases about HTTP itself
run against the live server in tests/api/test_jwt_attacks_api.py (OVER_HTTP).
"""

from __future__ import annotations

import builtins
import io
import json
import os
import time
from collections.abc import Iterator

import pytest

from jwt_forgery import (
    CASES,
    MAX_LEEWAY_SECONDS,
    OVER_HTTP,
    SECRET,
    TTL,
    VARIANTS,
    WEAK_SECRETS,
    Ctx,
    Variant,
    claims_at,
    key_set,
    old_keys,
    unb64,
)
from strongroom.auth.keys import KeySet, hmac_key
from strongroom.auth.tokens import TokenAuthority
from strongroom.errors import ConfigError, InvalidTokenError


@pytest.fixture(params=["HS256", "EdDSA"])
def ctx(request: pytest.FixtureRequest) -> Ctx:
    keys = key_set(request.param)
    authority = TokenAuthority(keys, max_ttl_seconds=TTL,
                               leeway_seconds=MAX_LEEWAY_SECONDS)
    token = authority.issue_access_token(42, TTL).value
    header, claims = (json.loads(unb64(p)) for p in token.split(".")[:2])
    return Ctx(authority, keys.active, token, header, claims)


@pytest.fixture
def no_file_io(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail on any attempt to open a file while a token is verified."""
    def refuse(*args: object, **kwargs: object) -> object:
        raise AssertionError(f"file opened during verification: {args[:1]!r}")
    for target, name in ((os, "open"), (builtins, "open"), (io, "open")):
        monkeypatch.setattr(target, name, refuse)
    yield


TOKEN_LAYER = [
    pytest.param(case_id, name, build, id=f"{case_id}:{name}")
    for case_id, variants in VARIANTS.items()
    for name, build in variants.items()
]


@pytest.mark.parametrize(("case_id", "name", "build"), TOKEN_LAYER)
def test_attack_token_is_refused_without_touching_files(
    ctx: Ctx, case_id: str, name: str, build: Variant, no_file_io: None
) -> None:
    token = build(ctx)

    started = time.perf_counter()
    with pytest.raises(InvalidTokenError):
        ctx.authority.verify_access_token(token)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - started

    assert elapsed < 0.5, f"{case_id} {name} took {elapsed:.3f} s"


def test_the_valid_baseline_token_is_accepted(ctx: Ctx) -> None:
    """The control for every attack: the token they start from verifies."""
    assert ctx.authority.verify_access_token(ctx.token).user_id == 42


def test_a_token_of_the_verify_only_key_is_accepted_during_rotation(
    ctx: Ctx,
) -> None:
    """[KID-08 (a)] The old key stays valid for verifying while its tokens live."""
    old = TokenAuthority(old_keys(ctx.key.algorithm)).issue_access_token(42, TTL)

    assert ctx.authority.verify_access_token(old.value).user_id == 42


def test_a_verify_only_key_never_signs(ctx: Ctx) -> None:
    """[KID-08] New tokens always come from the active key."""
    kids = {json.loads(unb64(ctx.authority.issue_access_token(1, 60).value
                             .split(".")[0]))["kid"] for _ in range(5)}

    assert kids == {ctx.key.kid}


@pytest.mark.parametrize(
    "secret",
    [b"", b"\x00" * 32, b" " * 40, *(s * (64 // len(s) + 1) for s in WEAK_SECRETS)],
    ids=lambda s: repr(s[:12]),
)
def test_start_up_refuses_a_blank_short_or_sample_secret(secret: bytes) -> None:
    """[ALG-13, ALG-14] The server never signs with a guessable HS256 key."""
    with pytest.raises(ConfigError):
        KeySet.from_secret(secret)


def test_hmac_and_public_keys_are_never_mixed() -> None:
    """[ALG-10, KID-08] One key set, one algorithm."""
    with pytest.raises(ConfigError, match="never mixes"):
        KeySet(hmac_key(SECRET), [old_keys("EdDSA").active])


def test_the_deepest_header_is_refused_past_the_size_gate(ctx: Ctx) -> None:
    """[ENC-02] Depth 20000, straight into the verifier behind the size gate."""
    header = b'{"alg":"HS256","x":' + b"[" * 20000 + b"]" * 20000 + b"}"

    with pytest.raises(InvalidTokenError):
        ctx.authority._verify_unbounded(ctx.forge(header))


@pytest.mark.parametrize(
    ("case_id", "name"),
    [
        ("CLM-01", "at-exp-within-leeway"),
        ("CLM-02", "nbf-within-leeway"),
    ],
)
def test_times_within_the_leeway_are_accepted(
    ctx: Ctx, case_id: str, name: str
) -> None:
    """[CLM-01, CLM-02] The leeway is honoured, so the refusals above are real."""
    change = {"exp": -(MAX_LEEWAY_SECONDS - 3), "iat": -100}
    if case_id == "CLM-02":
        change = {"nbf": MAX_LEEWAY_SECONDS - 3}
    claims = claims_at(ctx, **change)

    assert ctx.authority.verify_access_token(ctx.forge(claims=claims)).user_id == 42


def test_a_lifetime_longer_than_configured_is_refused(ctx: Ctx) -> None:
    """[CLM-01] A key holder cannot mint a token that outlives the setting."""
    claims = claims_at(ctx, exp=TTL + 60)

    with pytest.raises(InvalidTokenError, match="lifetime"):
        ctx.authority.verify_access_token(ctx.forge(claims=claims))


def test_hmac_mode_publishes_no_keys() -> None:
    assert TokenAuthority(KeySet.from_secret(SECRET)).public_jwks() == {"keys": []}


def test_eddsa_mode_publishes_only_public_members() -> None:
    jwks = TokenAuthority(key_set("EdDSA")).public_jwks()["keys"]

    assert len(jwks) == 2
    assert all(set(jwk) == {"kty", "crv", "x", "kid", "alg", "use"} for jwk in jwks)


def test_every_case_in_the_file_has_a_test() -> None:
    handled = set(VARIANTS) | OVER_HTTP

    assert set(CASES) - handled == set()
    assert handled - set(CASES) == set()
