"""The multiplexed connection as a protocol: bytes in, bytes out, a clock moved by hand (as h11 is tested).

``Connection`` is an ``asyncio.Protocol``; here its transport is a list of the bytes written and its loop
a stand-in whose clock and timers the test moves (futures are a real, idle loop's).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis.exceptions as errors

from identity_middleware.stores.redis.accelerated.mux import Connection
from identity_middleware.stores.redis.accelerated.resp import LOAD_SCRIPTS, SCRIPT_COUNT, pack

GET_A, GET_B = pack(("GET", "a")), pack(("GET", "b"))


class Timer:
    def __init__(self, when: float, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.when_due, self.callback, self.args, self.cancelled = when, callback, args, False

    def cancel(self) -> None:
        self.cancelled = True


class Clock:
    """What ``Connection`` asks of its loop: futures (a real loop's), the time, and timers run by hand."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.now = 0.0
        self.timers: list[Timer] = []

    def time(self) -> float:
        return self.now

    def create_future(self) -> asyncio.Future[Any]:
        return self.loop.create_future()

    def call_soon(self, callback: Callable[..., object], *args: Any) -> Timer:
        return self.call_at(self.now, callback, *args)

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer:
        return self.call_at(self.now + delay, callback, *args)

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> Timer:
        timer = Timer(when, callback, args)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float = 0.0) -> None:
        """Move the clock and run every timer now due, in order of their due time."""
        self.now += seconds
        while due := sorted((t for t in self.timers if t.when_due <= self.now and not t.cancelled),
                            key=lambda t: t.when_due):
            for timer in due:
                self.timers.remove(timer)
                timer.callback(*timer.args)


class Wire(asyncio.Transport):
    """The connection's transport: what was written, and whether it was aborted."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def abort(self) -> None:
        self.aborted = True


@pytest.fixture
def clock() -> Iterator[Clock]:
    loop = asyncio.new_event_loop()
    try:
        yield Clock(loop)
    finally:
        loop.close()


def connected(clock: Clock, timeout: float | None = 5.0) -> tuple[Connection, Wire]:
    mux = Connection(clock, timeout)  # type: ignore[arg-type]
    wire = Wire()
    mux.connection_made(wire)
    return mux, wire


def test_calls_of_one_tick_go_out_in_one_write_and_replies_complete_them_in_order(clock: Clock) -> None:
    mux, wire = connected(clock)
    first, second = mux.call(GET_A), mux.call(GET_B)
    assert wire.written == []
    clock.advance()
    assert wire.written == [GET_A + GET_B]
    mux.data_received(b"$1\r\n1\r\n$1\r\n2\r\n")
    assert (first.result(), second.result()) == ("1", "2")


def test_a_reply_split_across_reads_completes_its_call_once_whole(clock: Clock) -> None:
    mux, _ = connected(clock)
    call = mux.call(GET_A)
    clock.advance()
    mux.data_received(b"$5\r\nhel")
    assert not call.done()
    mux.data_received(b"lo\r\n")
    assert call.result() == "hello"


def test_an_error_reply_fails_its_own_call_only(clock: Clock) -> None:
    mux, _ = connected(clock)
    wrong, right = mux.call(GET_A), mux.call(GET_B)
    clock.advance()
    mux.data_received(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n:7\r\n")
    assert isinstance(wrong.exception(), errors.ResponseError) and right.result() == 7
    assert mux.alive


def test_a_loading_reply_is_raised_as_redis_py_raises_it(clock: Clock) -> None:
    mux, _ = connected(clock)
    call = mux.call(GET_A)
    clock.advance()
    mux.data_received(b"-LOADING Redis is loading the dataset in memory\r\n")
    assert isinstance(call.exception(), errors.BusyLoadingError)  # a ConnectionError: an outage


def test_a_noscript_reply_loads_every_script_and_sends_the_call_again_once(clock: Clock) -> None:
    mux, wire = connected(clock)
    call = mux.call(GET_A)
    clock.advance()
    mux.data_received(b"-NOSCRIPT No matching script\r\n")
    assert not call.done() and wire.written[-1] == LOAD_SCRIPTS + GET_A
    mux.data_received(b"$2\r\nok\r\n" * SCRIPT_COUNT + b":1\r\n")
    assert call.result() == 1
    again = mux.call(GET_A)
    clock.advance()
    mux.data_received(b"-NOSCRIPT No matching script\r\n")
    mux.data_received(b"$2\r\nok\r\n" * SCRIPT_COUNT + b"-NOSCRIPT No matching script\r\n")
    assert isinstance(again.exception(), errors.NoScriptError)  # sent again once, not forever
    assert mux.alive and not mux.waiters


def test_a_call_past_its_own_deadline_fails_alone_and_its_late_reply_is_dropped(clock: Clock) -> None:
    mux, _ = connected(clock)
    bounded, unbounded = mux.call(GET_A, deadline=0.25), mux.call(GET_B)
    clock.advance(0.2)
    assert not bounded.done()
    clock.advance(0.1)
    assert isinstance(bounded.exception(), errors.TimeoutError) and not unbounded.done()
    mux.data_received(b"$4\r\nlate\r\n$4\r\nmine\r\n")
    assert unbounded.result() == "mine" and mux.alive


def test_a_sooner_deadline_moves_the_one_expiry_timer_forward(clock: Clock) -> None:
    mux, _ = connected(clock, timeout=None)
    later, sooner = mux.call(GET_A, deadline=1.0), mux.call(GET_B, deadline=0.0002)
    clock.advance()  # the write
    assert len([timer for timer in clock.timers if not timer.cancelled]) == 1  # one expiry timer, moved
    clock.advance(0.001)
    assert isinstance(sooner.exception(), errors.TimeoutError) and not later.done()
    clock.advance(1.0)
    assert isinstance(later.exception(), errors.TimeoutError)


def test_no_reply_within_the_socket_timeout_fails_every_call_and_the_connection(clock: Clock) -> None:
    mux, wire = connected(clock, timeout=5.0)
    calls = [mux.call(GET_A), mux.call(GET_B)]
    clock.advance(4.9)
    assert not any(call.done() for call in calls)
    clock.advance(0.2)
    assert all(isinstance(call.exception(), errors.TimeoutError) for call in calls)
    assert wire.aborted and not mux.alive
    assert isinstance(mux.call(GET_A).exception(), errors.TimeoutError)  # a failed connection takes no more


def test_a_reply_nobody_asked_for_fails_the_connection(clock: Clock) -> None:
    mux, wire = connected(clock)
    mux.data_received(b"+OK\r\n")
    assert wire.aborted and isinstance(mux.failure, errors.ConnectionError)


def test_a_lost_connection_fails_the_calls_waiting_on_it(clock: Clock) -> None:
    mux, _ = connected(clock)
    call = mux.call(GET_A)
    mux.connection_lost(ConnectionResetError("reset"))
    assert isinstance(call.exception(), errors.ConnectionError)
