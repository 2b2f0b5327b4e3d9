"""The store's breaker (stores/health.py) fed events on a fake clock: what makes a store down, and back;
and what a Redis failure counts as (stores/redis/verdicts.py)."""

from __future__ import annotations

import pytest
import redis.exceptions

from fake_clock import Clock
from identity_middleware.core.errors import StoreUnavailable
from identity_middleware.stores.health import Failure, Health, State
from identity_middleware.stores.redis.verdicts import failure_of


@pytest.fixture
def clock() -> Clock:
    return Clock()


def breaker(clock: Clock) -> Health:
    return Health(timeouts=3, run=1.0, cooldown=2.0, refused_cooldown=2.0, clock=clock)


def test_a_refused_connection_opens_at_once(clock: Clock) -> None:
    health = breaker(clock)
    assert health.failed(Failure.REFUSED)
    assert health.state is State.OPEN and health.cause is Failure.REFUSED
    assert not health.admits()


def test_a_reset_connection_opens_at_once(clock: Clock) -> None:
    health = breaker(clock)
    assert health.failed(Failure.RESET)
    assert health.down


def test_one_timeout_is_not_an_outage(clock: Clock) -> None:
    health = breaker(clock)
    assert not health.failed(Failure.TIMEOUT)
    assert health.state is State.CLOSED and health.admits()


def test_a_burst_of_timeouts_at_one_instant_is_not_an_outage(clock: Clock) -> None:
    # Sixty requests of a starved loop all past their deadline when the loop wakes: one event.
    health = breaker(clock)
    assert not any(health.failed(Failure.TIMEOUT) for _ in range(60))
    assert not health.down


def test_timeouts_spanning_the_run_with_no_answer_open_it(clock: Clock) -> None:
    health = breaker(clock)
    health.failed(Failure.TIMEOUT)
    clock.now += 0.5
    health.failed(Failure.TIMEOUT)
    clock.now += 0.5
    assert health.failed(Failure.TIMEOUT)
    assert health.state is State.OPEN and health.cause is Failure.TIMEOUT


def test_an_answer_ends_a_run_of_timeouts(clock: Clock) -> None:
    health = breaker(clock)
    health.failed(Failure.TIMEOUT)
    clock.now += 0.6
    health.failed(Failure.TIMEOUT)
    health.answered()  # a reply came: Redis is there, this process is only slow
    clock.now += 0.6
    assert not health.failed(Failure.TIMEOUT)
    clock.now += 0.6
    assert not health.failed(Failure.TIMEOUT)
    assert not health.down


def test_timeouts_noticed_long_after_their_deadline_do_not_count(clock: Clock) -> None:
    # The process was not running when the deadlines passed (a starved loop): nothing about Redis.
    health = breaker(clock)
    for _ in range(5):
        assert not health.failed(Failure.TIMEOUT, late=0.3)
        clock.now += 0.5
    assert not health.down
    health.failed(Failure.TIMEOUT, late=0.05)  # within the slack: the server's
    clock.now += 1.0
    health.failed(Failure.TIMEOUT)
    assert health.failed(Failure.TIMEOUT)


def test_open_refuses_calls_until_the_cooldown(clock: Clock) -> None:
    health = breaker(clock)
    health.failed(Failure.REFUSED)
    clock.now += 1.9
    assert not health.admits()


def test_after_the_cooldown_one_probe_goes_through(clock: Clock) -> None:
    health = breaker(clock)
    health.failed(Failure.REFUSED)
    clock.now += 2.0
    assert health.admits()
    assert health.state is State.HALF_OPEN
    assert not health.admits()  # the others wait for the probe's answer


def test_an_answered_probe_closes_it(clock: Clock) -> None:
    health = breaker(clock)
    health.failed(Failure.REFUSED)
    clock.now += 2.0
    health.admits()
    health.answered()
    assert health.state is State.CLOSED and health.cause is None
    assert health.admits()


def test_a_failed_probe_opens_it_for_another_cooldown(clock: Clock) -> None:
    health = breaker(clock)
    health.failed(Failure.REFUSED)
    clock.now += 2.0
    health.admits()
    clock.now += 0.1
    assert health.failed(Failure.TIMEOUT)  # a single timeout is enough while probing
    assert health.state is State.OPEN
    clock.now += 1.9
    assert not health.admits()
    clock.now += 0.1
    assert health.admits()


def test_a_probe_that_never_reports_is_replaced_after_the_cooldown(clock: Clock) -> None:
    health = breaker(clock)
    health.failed(Failure.REFUSED)
    clock.now += 2.0
    assert health.admits()  # its caller is cancelled and never reports
    clock.now += 1.0
    assert not health.admits()
    clock.now += 1.0
    assert health.admits()


def test_a_late_failure_while_open_does_not_extend_the_cooldown(clock: Clock) -> None:
    health = breaker(clock)
    health.failed(Failure.REFUSED)
    clock.now += 1.5
    health.failed(Failure.TIMEOUT)  # a call begun before the outage, failing now
    clock.now += 0.5
    assert health.admits()


def test_by_default_a_refused_connection_is_probed_at_once_and_a_stall_after_the_cooldown(clock: Clock) -> None:
    refused, stalled = Health(clock=clock), Health(timeouts=1, run=0.0, clock=clock)
    refused.failed(Failure.REFUSED)
    stalled.failed(Failure.TIMEOUT)
    assert refused.admits()  # a probe to a server that refuses costs nothing
    assert not stalled.admits()  # a probe to a stalled one costs its caller the whole bound
    clock.now += 1.0
    assert stalled.admits()


@pytest.mark.parametrize("options", [{"timeouts": 0}, {"run": -1.0}, {"cooldown": float("nan")}])
def test_nonsense_settings_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Health(**options)  # type: ignore[arg-type]


# -- what a Redis failure says about the store (stores/redis/verdicts.py) ----------------------------
def _wrapped(error: BaseException) -> StoreUnavailable:
    try:
        raise StoreUnavailable(f"redis: {error}") from error
    except StoreUnavailable as wrapped:
        return wrapped


@pytest.mark.parametrize(("error", "failure"), [
    (redis.exceptions.TimeoutError("Timeout reading from socket"), Failure.TIMEOUT),
    (redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."), Failure.REFUSED),
    (redis.exceptions.AuthenticationError("invalid username-password pair"), Failure.REFUSED),
    (redis.exceptions.ConnectionError("redis refused this client: ERR DB index is out of range"), Failure.REFUSED),
    (redis.exceptions.ConnectionError("Connection reset by peer"), Failure.RESET),
    (redis.exceptions.ConnectionError("No connection available."), Failure.TIMEOUT),  # this process's own pool
])
def test_redis_failures_are_classified(error: BaseException, failure: Failure) -> None:
    assert failure_of(_wrapped(error)) is failure


def test_a_deadline_that_passed_is_a_timeout() -> None:
    assert failure_of(StoreUnavailable("redis: no reply within 2.0 s")) is Failure.TIMEOUT
