"""Password hashing with argon2id: policy, verification, rehash, bounded work."""

from __future__ import annotations

import threading

import argon2
import pytest

from strongroom.auth.passwords import (
    MAX_PASSWORD_BYTES,
    MIN_PASSWORD_CHARS,
    PasswordCheck,
    PasswordHasher,
)
from strongroom.errors import PasswordPolicyError

# Cheaper than the default, so that hashes made with it need a rehash.
WEAK = argon2.Parameters(
    type=argon2.Type.ID,
    version=19,
    salt_len=16,
    hash_len=32,
    time_cost=1,
    memory_cost=8192,
    parallelism=1,
)


class CountingSemaphore(threading.BoundedSemaphore):
    """A real semaphore that also counts how often it was taken and given back."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.acquired = 0
        self.released = 0

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        taken = super().acquire(blocking, -1 if timeout is None else timeout)
        self.acquired += int(taken)
        return taken

    __enter__ = acquire

    def release(self, n: int = 1) -> None:
        self.released += n
        super().release(n)


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    return PasswordHasher()


@pytest.fixture(scope="module")
def stored(hasher: PasswordHasher) -> str:
    return hasher.hash("correct horse battery")


def test_hash_uses_argon2id_with_rfc_9106_low_memory_parameters(stored: str) -> None:
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")


def test_hashes_of_one_password_differ_by_salt(hasher: PasswordHasher) -> None:
    assert hasher.hash("same password") != hasher.hash("same password")


def test_verify_accepts_the_right_password(hasher: PasswordHasher, stored: str) -> None:
    assert hasher.verify(stored, "correct horse battery") == PasswordCheck(ok=True)


@pytest.mark.parametrize(
    "attempt",
    ["correct horse batter", "Correct horse battery", "", "x" * 2000],
    ids=["prefix", "case", "empty", "over-cap"],
)
def test_verify_refuses_a_wrong_password(
    hasher: PasswordHasher, stored: str, attempt: str
) -> None:
    assert hasher.verify(stored, attempt).ok is False


def test_verify_of_an_unknown_user_is_never_ok(hasher: PasswordHasher) -> None:
    assert hasher.verify(None, "correct horse battery") == PasswordCheck(ok=False)


@pytest.mark.parametrize(
    "stored_hash",
    ["", "not-a-hash", "$argon2id$v=19$m=65536,t=3,p=4$broken", "$2b$12$" + "a" * 53],
    ids=["empty", "junk", "truncated", "bcrypt"],
)
def test_verify_answers_not_ok_for_a_malformed_stored_hash(
    hasher: PasswordHasher, stored_hash: str
) -> None:
    assert hasher.verify(stored_hash, "whatever1") == PasswordCheck(ok=False)


def test_verify_of_a_lone_surrogate_does_not_raise(
    hasher: PasswordHasher, stored: str
) -> None:
    assert hasher.verify(stored, "abc\ud800def").ok is False


def test_verify_asks_for_a_rehash_of_weaker_hashes(hasher: PasswordHasher) -> None:
    old = PasswordHasher(WEAK).hash("an older password")

    check = hasher.verify(old, "an older password")

    assert check == PasswordCheck(ok=True, needs_rehash=True)


def test_verify_asks_no_rehash_on_a_wrong_password(hasher: PasswordHasher) -> None:
    old = PasswordHasher(WEAK).hash("an older password")

    assert hasher.verify(old, "not it at all") == PasswordCheck(ok=False)


@pytest.mark.parametrize(
    "password",
    ["", "x" * (MIN_PASSWORD_CHARS - 1), "x" * (MAX_PASSWORD_BYTES + 1), "é" * 513],
    ids=["empty", "short", "over-cap", "over-cap-in-bytes"],
)
def test_hash_refuses_passwords_outside_the_policy(
    hasher: PasswordHasher, password: str
) -> None:
    with pytest.raises(PasswordPolicyError):
        hasher.hash(password)


@pytest.mark.parametrize(
    "password",
    ["x" * MIN_PASSWORD_CHARS, "x" * MAX_PASSWORD_BYTES, "é" * 512],
    ids=["shortest", "longest", "longest-in-bytes"],
)
def test_hash_accepts_passwords_at_the_policy_limits(
    hasher: PasswordHasher, password: str
) -> None:
    assert hasher.verify(hasher.hash(password), password).ok


def test_hash_and_verify_each_hold_a_slot_while_working() -> None:
    slots = CountingSemaphore(2)
    hasher = PasswordHasher(WEAK, slots=slots)
    stored = hasher.hash("first password")

    hasher.verify(stored, "first password")
    hasher.verify(stored, "wrong password")
    hasher.verify(None, "unknown user")
    hasher.verify(stored, "x" * (MAX_PASSWORD_BYTES + 1))  # refused before hashing

    assert (slots.acquired, slots.released) == (4, 4)
