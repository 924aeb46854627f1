"""Token key sets: kids, EdDSA key files, mixing refused, rotation and retirement."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from strongroom.auth.keys import (
    ED25519_FILE_NAME,
    KID_PATTERN,
    ROTATED_DIR_NAME,
    SECRET_FILE_NAME,
    Algorithm,
    KeySet,
    ed25519_key,
    load_key_set,
    load_or_create_secret,
    rotate_default_key,
)
from strongroom.auth.tokens import TokenAuthority
from strongroom.errors import ConfigError, InvalidTokenError

KEEP_SECONDS = 900
NOW = 1_800_000_000.0


def write_key(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    path.chmod(0o600)
    return path


def ed25519_pem(*, public_only: bool = False) -> bytes:
    private = ed25519.Ed25519PrivateKey.generate()
    if public_only:
        return private.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def token_of(keys_dir: Path, algorithm: str = "HS256") -> str:
    keys = load_key_set(algorithm, keys_dir)
    return TokenAuthority(keys).issue_access_token(7, 60).value


def kid_of(token: str) -> str:
    header = token.split(".")[0]
    raw = base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))
    return str(json.loads(raw)["kid"])


def verifies(data_dir: Path, token: str, algorithm: str = "HS256") -> bool:
    authority = TokenAuthority(load_key_set(algorithm, data_dir))
    try:
        authority.verify_access_token(token)
    except InvalidTokenError:
        return False
    return True


@pytest.mark.parametrize("algorithm", ["HS256", "EdDSA"])
def test_first_start_creates_the_default_key_with_a_kid(
    tmp_path: Path, algorithm: str
) -> None:
    keys = load_key_set(algorithm, tmp_path)

    name = SECRET_FILE_NAME if algorithm == "HS256" else ED25519_FILE_NAME
    assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    assert KID_PATTERN.fullmatch(keys.active.kid)
    assert load_key_set(algorithm, tmp_path).active.kid == keys.active.kid


def test_the_existing_secret_file_keeps_working_and_gets_a_kid(tmp_path: Path) -> None:
    """Issue 2's data folders carry jwt.secret; it stays the HS256 key."""
    secret = load_or_create_secret(tmp_path)

    keys = load_key_set("HS256", tmp_path)

    assert keys.active.secret == secret and KID_PATTERN.fullmatch(keys.active.kid)


def test_an_eddsa_key_file_from_the_settings_signs(tmp_path: Path) -> None:
    path = write_key(tmp_path / "signing.pem", ed25519_pem())

    keys = load_key_set("EdDSA", tmp_path / "data", path)

    assert keys.algorithm == "EdDSA" and keys.active.can_sign
    assert not (tmp_path / "data").exists()


def test_a_public_key_cannot_be_the_active_key(tmp_path: Path) -> None:
    path = write_key(tmp_path / "public.pem", ed25519_pem(public_only=True))

    with pytest.raises(ConfigError, match="only a public key"):
        load_key_set("EdDSA", tmp_path, path)


def test_a_public_key_verifies_only(tmp_path: Path) -> None:
    old = write_key(tmp_path / "old.pem", ed25519_pem(public_only=True))

    keys = load_key_set("EdDSA", tmp_path, None, [old])

    assert len(keys.kids()) == 2
    assert keys.public_jwks()["keys"][1]["kid"] == keys.kids()[1]


@pytest.mark.parametrize(
    ("algorithm", "content"),
    [("HS256", b"-----BEGIN PRIVATE KEY-----"), ("EdDSA", bytes(range(64)))],
    ids=["pem-as-hmac-secret", "secret-as-pem"],
)
def test_a_key_of_the_other_kind_stops_start_up(
    tmp_path: Path, algorithm: str, content: bytes
) -> None:
    """HMAC secrets and public keys are never mixed, not even by mistake."""
    path = write_key(tmp_path / "key", content * 2)

    with pytest.raises(ConfigError):
        load_key_set(algorithm, tmp_path, path)


def test_a_missing_key_file_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_key_set("EdDSA", tmp_path, tmp_path / "missing.pem")


def test_a_key_file_readable_by_others_stops_start_up(tmp_path: Path) -> None:
    path = write_key(tmp_path / "signing.pem", ed25519_pem())
    path.chmod(0o644)

    with pytest.raises(ConfigError, match="chmod 600"):
        load_key_set("EdDSA", tmp_path, path)


@pytest.mark.parametrize("algorithm", ["HS256", "EdDSA"])
def test_rotation_signs_with_a_new_key_and_still_verifies_the_old_one(
    tmp_path: Path, algorithm: str
) -> None:
    """[KID-08 (a)] Tokens of the old key live out their lifetime."""
    old_token = token_of(tmp_path, algorithm)

    done = rotate_default_key(algorithm, tmp_path, KEEP_SECONDS, NOW)

    keys = load_key_set(algorithm, tmp_path)
    assert keys.active.kid == done.new_kid != done.old_kid
    assert keys.kids() == [done.new_kid, done.old_kid]
    assert verifies(tmp_path, old_token, algorithm)
    assert kid_of(token_of(tmp_path, algorithm)) == done.new_kid


@pytest.mark.parametrize("algorithm", ["HS256", "EdDSA"])
def test_a_later_rotation_retires_keys_whose_tokens_have_expired(
    tmp_path: Path, algorithm: str
) -> None:
    """[KID-08 (b)] A retired key verifies nothing."""
    first_token = token_of(tmp_path, algorithm)
    first = rotate_default_key(algorithm, tmp_path, KEEP_SECONDS, NOW)

    later = NOW + KEEP_SECONDS + 1
    second = rotate_default_key(algorithm, tmp_path, KEEP_SECONDS, later)

    assert second.retired_kids == (first.old_kid,)
    assert load_key_set(algorithm, tmp_path).kids() == [
        second.new_kid, first.new_kid]
    assert not verifies(tmp_path, first_token, algorithm)


def test_a_rotation_within_the_lifetime_keeps_both_old_keys(tmp_path: Path) -> None:
    load_key_set("HS256", tmp_path)
    rotate_default_key("HS256", tmp_path, KEEP_SECONDS, NOW)

    rotate_default_key("HS256", tmp_path, KEEP_SECONDS, NOW + 10)

    assert len(list((tmp_path / ROTATED_DIR_NAME).iterdir())) == 2
    assert len(load_key_set("HS256", tmp_path).kids()) == 3


def test_rotated_keys_of_another_algorithm_stop_start_up(tmp_path: Path) -> None:
    load_key_set("HS256", tmp_path)
    rotate_default_key("HS256", tmp_path, KEEP_SECONDS, NOW)

    with pytest.raises(ConfigError, match="not a PEM Ed25519 key"):
        load_key_set("EdDSA", tmp_path)


def test_rotation_without_a_key_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        rotate_default_key("HS256", tmp_path, KEEP_SECONDS, NOW)


# Keys per token kind (KeySet.derive)


@pytest.mark.parametrize("algorithm", ["HS256", "EdDSA"])
def test_a_derived_set_has_its_own_keys_and_kids(
    tmp_path: Path, algorithm: Algorithm
) -> None:
    base = load_key_set(algorithm, tmp_path)

    share = base.derive("share")

    assert share.algorithm == algorithm
    assert set(share.kids()).isdisjoint(base.kids())
    assert share.kids() == load_key_set(algorithm, tmp_path).derive("share").kids()
    assert share.kids() != base.derive("other").kids()


@pytest.mark.parametrize("algorithm", ["HS256", "EdDSA"])
def test_a_token_of_one_kind_never_verifies_as_another(
    tmp_path: Path, algorithm: Algorithm
) -> None:
    """Even with the same typ, a derived key's signature fails the base key."""
    base = load_key_set(algorithm, tmp_path)
    token = TokenAuthority(base.derive("share")).issue_access_token(42, 60).value

    with pytest.raises(InvalidTokenError, match="unknown key"):
        TokenAuthority(base).verify_access_token(token)


@pytest.mark.parametrize("algorithm", ["HS256", "EdDSA"])
def test_derived_keys_follow_a_rotation(tmp_path: Path, algorithm: Algorithm) -> None:
    """A rotated-out key still verifies the other kinds' tokens it signed."""
    before = load_key_set(algorithm, tmp_path).derive("share")
    token = TokenAuthority(before).issue_access_token(42, 60).value
    rotate_default_key(algorithm, tmp_path, KEEP_SECONDS, NOW)

    after = load_key_set(algorithm, tmp_path).derive("share")

    assert after.active.kid != before.active.kid
    assert TokenAuthority(after).verify_access_token(token).user_id == 42
    with pytest.raises(ValueError, match="verify-only"):
        after.find(before.active.kid).sign(b"x")  # type: ignore[union-attr]


@pytest.mark.parametrize("algorithm", ["HS256", "EdDSA"])
def test_secrets_for_a_purpose_are_stable_separate_and_follow_the_key(
    tmp_path: Path, algorithm: Algorithm
) -> None:
    keys = load_key_set(algorithm, tmp_path)

    secret = keys.secret_for("login throttle")

    assert len(secret) == 32
    assert secret == load_key_set(algorithm, tmp_path).secret_for("login throttle")
    assert secret != keys.secret_for("log name digest")
    rotate_default_key(algorithm, tmp_path, KEEP_SECONDS, NOW)
    assert load_key_set(algorithm, tmp_path).secret_for("login throttle") != secret


def test_a_public_only_verify_key_has_no_derived_key() -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    old = ed25519_key(None, ed25519.Ed25519PrivateKey.generate().public_key())
    keys = KeySet(ed25519_key(private, private.public_key()), [old])

    assert len(keys.derive("share").kids()) == 1
