"""Login throttling: failures slow the next attempt, successes and time forgive."""

from __future__ import annotations

import pytest

from strongroom.auth.throttle import (
    FREE_FAILURES,
    MAX_WAIT_SECONDS,
    WINDOW_SECONDS,
    LoginThrottle,
)
from strongroom.errors import TooManyRequestsError


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fail(throttle: LoginThrottle, times: int, user: str = "alice",
         client: str = "10.0.0.1") -> None:
    for _ in range(times):
        throttle.failed(user, client)


def test_the_first_failures_cost_nothing() -> None:
    throttle = LoginThrottle(clock=Clock())

    fail(throttle, FREE_FAILURES - 1)

    throttle.check("alice", "10.0.0.1")


def test_failures_past_the_free_ones_must_wait_with_a_retry_after() -> None:
    throttle = LoginThrottle(clock=Clock())
    fail(throttle, FREE_FAILURES + 2)

    with pytest.raises(TooManyRequestsError) as caught:
        throttle.check("alice", "10.0.0.1")

    assert caught.value.retry_after == pytest.approx(4.0)


def test_the_wait_grows_but_never_past_the_maximum() -> None:
    throttle = LoginThrottle(clock=Clock())
    fail(throttle, FREE_FAILURES + 40)

    with pytest.raises(TooManyRequestsError) as caught:
        throttle.check("alice", "elsewhere")

    assert caught.value.retry_after == pytest.approx(MAX_WAIT_SECONDS)


def test_the_client_address_is_throttled_across_user_names() -> None:
    throttle = LoginThrottle(clock=Clock())
    for n in range(FREE_FAILURES + 1):
        throttle.failed(f"user{n}", "10.0.0.9")

    with pytest.raises(TooManyRequestsError):
        throttle.check("someone-new", "10.0.0.9")


def test_waiting_out_the_delay_lets_the_next_attempt_through() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    fail(throttle, FREE_FAILURES + 1)

    clock.now += 2.5

    throttle.check("alice", "10.0.0.1")


def test_a_success_clears_the_user_name() -> None:
    throttle = LoginThrottle(clock=Clock())
    fail(throttle, FREE_FAILURES + 3, client="10.0.0.1")

    throttle.succeeded("alice", "10.0.0.1")

    throttle.check("alice", "10.0.0.2")


def test_a_success_gives_back_one_attempt_of_the_address_only() -> None:
    throttle = LoginThrottle(clock=Clock())
    for n in range(FREE_FAILURES - 1):
        throttle.failed(f"user{n}", "10.0.0.9")
    throttle.failed("mallory", "10.0.0.9")  # counted before the check of a
    throttle.succeeded("mallory", "10.0.0.9")  # right password, then given back

    throttle.check("someone-new", "10.0.0.9")  # one failure short of the wait
    throttle.failed("someone-new", "10.0.0.9")
    with pytest.raises(TooManyRequestsError):
        throttle.check("another", "10.0.0.9")


def test_counts_fade_after_a_quiet_window_so_nobody_is_locked_out() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    fail(throttle, FREE_FAILURES + 30)

    clock.now += WINDOW_SECONDS + 1

    throttle.check("alice", "10.0.0.1")
