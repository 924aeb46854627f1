"""Signing keys for access tokens: one algorithm, a few keys, each named by a kid.

A `KeySet` holds every key this process accepts, loaded once at start-up and never
changed afterwards: one active key that signs, and any number of verify-only keys
kept while the tokens they signed run out (rotation). All keys of a set share one
algorithm, HS256 or EdDSA (Ed25519); HMAC and public keys are never mixed, so a
public key can never be misused as an HMAC secret (the RS256/HS256 confusion).

A key's `kid` is derived from the key itself, so every process reading the same
files agrees on it without storing it anywhere: the first 16 characters of a
SHA-256 over a label and the key bytes (HS256) or the RFC 7638 thumbprint
(EdDSA). A token's `kid` is only ever a dictionary lookup into this set; it is
never a path, a URL or a query, and an unknown kid never triggers a reload.

Files. HS256 keys are secret files (at least 32 random bytes, mode 0600, owned
by the service, not a symlink); the default is `<data_dir>/jwt.secret`, created
on first start. EdDSA keys are PEM files: the active one holds a PKCS#8 private
key (the default `<data_dir>/jwt-ed25519.pem` is created on first start); a
verify-only one may hold the private or only the public key.

Limits: keys are read at start-up only; a rotation takes effect when each
process restarts. Nothing here logs a key.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from strongroom.errors import ConfigError

__all__ = [
    "ED25519_FILE_NAME",
    "ROTATED_DIR_NAME",
    "KID_PATTERN",
    "MIN_SECRET_BYTES",
    "SECRET_FILE_NAME",
    "Algorithm",
    "KeySet",
    "Rotation",
    "TokenKey",
    "load_key_set",
    "load_or_create_secret",
    "rotate_default_key",
]

Algorithm = Literal["HS256", "EdDSA"]

# HS256 needs a key of at least its hash size, 256 bits (RFC 7518, section 3.2).
MIN_SECRET_BYTES = 32
# New secrets fill one SHA-256 block; longer keys are hashed down anyway.
NEW_SECRET_BYTES = 64
# A key file larger than this is not one of ours (a PEM Ed25519 key is ~120 bytes).
MAX_KEY_FILE_BYTES = 4096
SECRET_FILE_NAME = "jwt.secret"  # noqa: S105 (a file name)
ED25519_FILE_NAME = "jwt-ed25519.pem"
# Rotated-out keys, verify-only, named "<unix seconds of rotation>-<kid>.key".
ROTATED_DIR_NAME = "jwt-verify-only"
_ROTATED_NAME = re.compile(r"([0-9]{1,12})-([A-Za-z0-9_-]{16})\.key")
# Every kid we make is 16 base64url characters; anything else is refused before a
# lookup, so a kid can carry no path, URL, NUL, space or homoglyph.
KID_LENGTH = 16
KID_PATTERN = re.compile(r"[A-Za-z0-9_-]{16}")
# Ed25519 signatures are always 64 bytes (RFC 8032, section 5.1.6).
_ED25519_SIGNATURE_BYTES = 64
# Sample secrets from tutorials and library docs; a secret made of nothing but
# repeats of one of them is refused even when it is long enough.
_SAMPLE_SECRETS = (
    "09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7",
    "your-256-bit-secret",
    "secret",
    "changeme",
    "password",
    "supersecret",
    "jwt_secret",
    "strongroom",
)


@dataclass(frozen=True, slots=True)
class TokenKey:
    """One key: its kid, its algorithm, and what it can do.

    `secret` is set for HS256 keys; `public_key` (and, when this key may sign,
    `private_key`) for EdDSA. Key material is left out of `repr`.
    """

    kid: str
    algorithm: Algorithm
    can_sign: bool
    secret: bytes = field(default=b"", repr=False)
    private_key: Ed25519PrivateKey | None = field(default=None, repr=False)
    public_key: Ed25519PublicKey | None = field(default=None, repr=False)

    def sign(self, signing_input: bytes) -> bytes:
        """Return the signature of `signing_input` with this key's algorithm.

        Raises:
            ValueError: this key is verify-only.
        """
        if not self.can_sign:
            raise ValueError(f"key {self.kid} is verify-only")
        if self.algorithm == "HS256":
            return hmac.digest(self.secret, signing_input, "sha256")
        assert self.private_key is not None
        return self.private_key.sign(signing_input)

    def is_valid_signature(self, signing_input: bytes, signature: bytes) -> bool:
        """Return whether `signature` over `signing_input` was made by this key."""
        if self.algorithm == "HS256":
            expected = hmac.digest(self.secret, signing_input, "sha256")
            return hmac.compare_digest(expected, signature)
        assert self.public_key is not None
        if len(signature) != _ED25519_SIGNATURE_BYTES:
            return False
        try:
            self.public_key.verify(signature, signing_input)
        except InvalidSignature:
            return False
        return True

    def public_jwk(self) -> dict[str, str] | None:
        """Return this key's public JWK (RFC 8037), or None for an HMAC secret."""
        if self.public_key is None:
            return None
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": _b64url(_raw_public(self.public_key)),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        }


class KeySet:
    """The keys one process accepts: one active signer, others verify-only.

    Immutable after construction and safe to share between threads.
    """

    def __init__(self, active: TokenKey, verify_only: Iterable[TokenKey] = ()) -> None:
        """Hold `active` for signing and every key for verifying.

        Raises:
            ConfigError: the active key cannot sign, the keys mix algorithms, or
                two keys have the same kid.
        """
        if not active.can_sign:
            raise ConfigError(f"the active token key {active.kid} cannot sign")
        keys = {active.kid: active}
        for key in verify_only:
            if key.algorithm != active.algorithm:
                raise ConfigError(
                    f"token key {key.kid} is {key.algorithm} but the active key is "
                    f"{active.algorithm}; one key set never mixes algorithms"
                )
            if key.kid in keys:
                raise ConfigError(f"token key {key.kid} is listed twice")
            keys[key.kid] = _verify_only(key)
        self.active = active
        self.algorithm: Algorithm = active.algorithm
        self._keys: Mapping[str, TokenKey] = keys

    @classmethod
    def from_secret(cls, secret: bytes, *old_secrets: bytes) -> KeySet:
        """Build an HS256 set signing with `secret`, verifying also `old_secrets`.

        Raises:
            ConfigError: a secret is short, a repeated pattern or a sample value.
        """
        return cls(hmac_key(secret), (hmac_key(s, can_sign=False) for s in old_secrets))

    def derive(self, purpose: str) -> KeySet:
        """Return this set's keys for another kind of token, one derived key each.

        Each token kind signs with its own key, so a token of one kind can never
        verify as another even if every other check failed. A derived key is an
        HMAC-SHA256 of the key material and the purpose: every process reading
        the same key files derives the same keys and kids, and nothing new is
        stored. An Ed25519 key derives from its private bytes; a verify-only key
        given as a public key alone has none, so it has no derived key: tokens of
        other kinds that it signed stop verifying once it is no longer active.
        """
        derived = [_derived_key(key, purpose) for key in self._keys.values()]
        active = derived[0]
        assert active is not None  # the active key can sign: it has private bytes
        return KeySet(active, [key for key in derived[1:] if key is not None])

    def secret_for(self, purpose: str) -> bytes:
        """Return 32 secret bytes for `purpose`, derived from the active key.

        For keyed digests that must not be computed by anyone without the key
        files (a login name in a log line, a throttle's keys in the database),
        and that every process reading the same key files computes alike. A
        new active key gives new secrets.
        """
        label = b"strongroom secret\x00" + purpose.encode("ascii")
        return hmac.digest(_key_material(self.active), label, "sha256")

    def find(self, kid: str) -> TokenKey | None:
        """Return the key named `kid`, or None; never loads anything."""
        return self._keys.get(kid)

    def kids(self) -> list[str]:
        """Return every kid, the active one first."""
        return list(self._keys)

    def public_jwks(self) -> dict[str, list[dict[str, str]]]:
        """Return the JWK Set of the public keys (no keys at all in HMAC mode)."""
        jwks = [key.public_jwk() for key in self._keys.values()]
        return {"keys": [jwk for jwk in jwks if jwk is not None]}


def hmac_key(secret: bytes, *, can_sign: bool = True) -> TokenKey:
    """Return the HS256 key for `secret`, its kid derived from the secret.

    Raises:
        ConfigError: the secret is short, a repeated pattern or a sample value.
    """
    _check_secret_strength(secret, "the signing secret")
    digest = hashlib.sha256(b"strongroom kid v1\x00" + secret).digest()
    return TokenKey(_b64url(digest)[:KID_LENGTH], "HS256", can_sign, secret=secret)


def ed25519_key(
    private_key: Ed25519PrivateKey | None, public_key: Ed25519PublicKey
) -> TokenKey:
    """Return the EdDSA key; it can sign when `private_key` is given."""
    thumbprint_input = json.dumps(
        {"crv": "Ed25519", "kty": "OKP", "x": _b64url(_raw_public(public_key))},
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    kid = _b64url(hashlib.sha256(thumbprint_input).digest())[:KID_LENGTH]
    return TokenKey(
        kid,
        "EdDSA",
        private_key is not None,
        private_key=private_key,
        public_key=public_key,
    )


def load_key_set(
    algorithm: Algorithm,
    data_dir: Path,
    key_file: Path | None = None,
    verify_key_files: Iterable[Path] = (),
) -> KeySet:
    """Read the token keys named by the settings; create the default key if absent.

    `key_file` is the active key (default: `jwt.secret` or `jwt-ed25519.pem` in
    `data_dir`, created on first start); `verify_key_files` hold older keys kept
    for verifying only.

    Raises:
        ConfigError: a file is missing, unsafe (symlink, readable by others,
            another owner), too weak, not a key of `algorithm`, or a kid repeats.
    """
    old_paths = [*verify_key_files, *_rotated_out(data_dir)]
    if algorithm == "HS256":
        active_secret = (
            load_or_create_secret(data_dir)
            if key_file is None
            else _read_secret(key_file)
        )
        olds = [_read_secret(path) for path in old_paths]
        return KeySet.from_secret(active_secret, *olds)

    path = key_file or data_dir / ED25519_FILE_NAME
    if key_file is None and not path.exists():
        with contextlib.suppress(FileExistsError):
            _create_key_file(path, _new_ed25519_pem())
    active = _read_ed25519(path, need_private=True)
    old_keys = [_read_ed25519(p, need_private=False) for p in old_paths]
    return KeySet(active, old_keys)


@dataclass(frozen=True, slots=True)
class Rotation:
    """What `rotate_default_key` did: the new kid, the old one, the kids dropped."""

    new_kid: str
    old_kid: str
    retired_kids: tuple[str, ...]


def rotate_default_key(
    algorithm: Algorithm, data_dir: Path, keep_seconds: int, now: float
) -> Rotation:
    """Make a new active key in `data_dir`; keep the old one verify-only.

    The old key moves to `<data_dir>/jwt-verify-only/` and verifies tokens until
    a later rotation finds it older than `keep_seconds` (the longest token
    lifetime plus leeway), which retires it for good. The active file is
    replaced atomically, so a process starting meanwhile reads either key.
    Running processes keep their keys, and go on signing with the old one,
    until they restart: restart them all before the next rotation, or tokens
    they signed in between die when that rotation retires the old key.

    Raises:
        ConfigError: the active key is missing or unusable, or the folder of
            verify-only keys cannot be written.
    """
    active_path = data_dir / (
        SECRET_FILE_NAME if algorithm == "HS256" else ED25519_FILE_NAME
    )
    old = _read_active(algorithm, active_path)
    folder = data_dir / ROTATED_DIR_NAME
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        retired = _retire_old(folder, now - keep_seconds)
        os.link(active_path, folder / f"{int(now)}-{old.kid}.key")
    except OSError as exc:
        raise ConfigError(
            f"token keys in {str(folder)!r} cannot be written: {exc.strerror}"
        ) from None

    _replace_key_file(active_path, _new_key_content(algorithm))
    new = _read_active(algorithm, active_path)
    return Rotation(new.kid, old.kid, retired)


def load_or_create_secret(data_dir: Path) -> bytes:
    """Return the HS256 secret in `data_dir`, creating it on first start.

    A new secret is written to a private temporary file and linked into place,
    so the file appears whole or not at all, even with two processes starting.

    Raises:
        ConfigError: the file exists but is a symlink or not a regular file, is
            readable or writable by group or others, belongs to another user, or
            is too weak (short, a repeated pattern, a sample value); or it cannot
            be created.
    """
    path = data_dir / SECRET_FILE_NAME
    try:
        return _read_secret(path, missing_ok=True)
    except FileNotFoundError:
        pass

    with contextlib.suppress(FileExistsError):
        _create_key_file(path, secrets.token_bytes(NEW_SECRET_BYTES))
    return _read_secret(path)


def _new_key_content(algorithm: Algorithm) -> bytes:
    if algorithm == "HS256":
        return secrets.token_bytes(NEW_SECRET_BYTES)
    return _new_ed25519_pem()


def _read_active(algorithm: Algorithm, path: Path) -> TokenKey:
    if algorithm == "HS256":
        return hmac_key(_read_secret(path))
    return _read_ed25519(path, need_private=True)


def _rotated_out(data_dir: Path) -> list[Path]:
    """Return the verify-only key files left by rotations, oldest first."""
    folder = data_dir / ROTATED_DIR_NAME
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(
            f"token keys in {str(folder)!r} cannot be listed: {exc.strerror}"
        ) from None
    chosen = sorted(
        (n for n in names if _ROTATED_NAME.fullmatch(n)),
        key=lambda n: int(n.split("-")[0]),
    )
    return [folder / name for name in chosen]


def _retire_old(folder: Path, cutoff: float) -> tuple[str, ...]:
    # Every token such a key signed has expired: the key can go for good.
    retired = []
    for name in os.listdir(folder):
        match = _ROTATED_NAME.fullmatch(name)
        if match is not None and int(match.group(1)) < cutoff:
            (folder / name).unlink()
            retired.append(match.group(2))
    return tuple(retired)


def _replace_key_file(path: Path, content: bytes) -> None:
    tmp = path.with_name(f".{path.name}.new")
    tmp.unlink(missing_ok=True)
    _create_key_file(tmp, content)
    try:
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(
            f"token key {str(path)!r} cannot be replaced: {exc.strerror}"
        ) from None


def _derived_key(key: TokenKey, purpose: str) -> TokenKey | None:
    label = b"strongroom token kind\x00" + purpose.encode("ascii")
    if key.algorithm == "HS256":
        secret = hmac.digest(key.secret, label, "sha256")
        return hmac_key(secret, can_sign=key.can_sign)
    if key.private_key is None:
        return None
    raw = _key_material(key)
    private = Ed25519PrivateKey.from_private_bytes(hmac.digest(raw, label, "sha256"))
    derived = ed25519_key(private, private.public_key())
    return derived if key.can_sign else _verify_only(derived)


def _key_material(key: TokenKey) -> bytes:
    """The secret bytes of a key that can sign: its HMAC secret or Ed25519 seed."""
    if key.algorithm == "HS256":
        return key.secret
    assert key.private_key is not None
    return key.private_key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )


def _verify_only(key: TokenKey) -> TokenKey:
    # The private key stays (when there is one) so that `derive` can still make
    # this key's counterpart for other token kinds; `sign` refuses all the same.
    return TokenKey(
        key.kid,
        key.algorithm,
        False,
        secret=key.secret,
        private_key=key.private_key,
        public_key=key.public_key,
    )


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _raw_public(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def _new_ed25519_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _read_ed25519(path: Path, *, need_private: bool) -> TokenKey:
    content = _read_key_file(path)
    shown = f"token key {str(path)!r}"
    try:
        if b"PRIVATE KEY" in content:
            private = serialization.load_pem_private_key(content, password=None)
            if not isinstance(private, Ed25519PrivateKey):
                raise ConfigError(f"{shown} is not an Ed25519 key")
            return ed25519_key(private, private.public_key())
        public = serialization.load_pem_public_key(content)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{shown} is not a PEM Ed25519 key without a password ({exc})"
        ) from None
    if not isinstance(public, Ed25519PublicKey):
        raise ConfigError(f"{shown} is not an Ed25519 key")
    if need_private:
        raise ConfigError(f"{shown} holds only a public key; the active key must sign")
    return ed25519_key(None, public)


def _read_secret(path: Path, *, missing_ok: bool = False) -> bytes:
    secret = _read_key_file(path, missing_ok=missing_ok)
    _check_secret_strength(secret, f"signing secret {str(path)!r}")
    return secret


def _read_key_file(path: Path, *, missing_ok: bool = False) -> bytes:
    # `missing_ok` lets FileNotFoundError through, for a default key not made yet.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        if missing_ok:
            raise
        raise ConfigError(f"token key {str(path)!r} does not exist") from None
    except OSError as exc:
        raise ConfigError(
            f"token key {str(path)!r} cannot be opened ({exc.strerror}); it must "
            "be an existing regular file, not a symlink"
        ) from None
    try:
        _check_key_file(path, os.fstat(fd))
        return os.read(fd, MAX_KEY_FILE_BYTES + 1)
    finally:
        os.close(fd)


def _check_key_file(path: Path, st: os.stat_result) -> None:
    shown = f"token key {str(path)!r}"
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{shown} is not a regular file")
    if st.st_mode & 0o077:
        raise ConfigError(
            f"{shown} has mode {st.st_mode & 0o777:04o}; others must not read it: "
            f"chmod 600 {str(path)!r}"
        )
    if st.st_uid != os.geteuid():
        raise ConfigError(f"{shown} belongs to another user; the service must own it")
    if st.st_size > MAX_KEY_FILE_BYTES:
        raise ConfigError(f"{shown} is over {MAX_KEY_FILE_BYTES} bytes; not a key")


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
    if b"-----BEGIN" in secret:
        raise ConfigError(
            f"{shown} is a PEM key, not an HMAC secret; for Ed25519 keys set "
            'token_algorithm = "EdDSA"'
        )
    text = secret.strip().lower()
    for sample in _SAMPLE_SECRETS:
        if not text.replace(sample.encode(), b""):
            raise ConfigError(
                f"{shown} is a sample value from documentation, not a secret; "
                "delete the file to have a random one made"
            )


def _create_key_file(path: Path, content: bytes) -> None:
    # Written to a private temporary name and linked into place: the file
    # appears whole or not at all, and link(2) lets the first process win.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o600)
        try:
            os.write(fd, content)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        raise ConfigError(
            f"token key {str(path)!r} cannot be created: {exc.strerror}"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
