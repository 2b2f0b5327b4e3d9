"""Whether a store is down: a circuit breaker fed what its calls met, on a clock it is given (sans-IO).

One late reply is not an outage. A starved event loop or a paused process reads a reply long after
Redis sent it; deciding "down" from one request's deadline let requests through unmetered exactly
when traffic peaked. So the store is down only on evidence about the store itself:

- a connection refused or reset (nothing listens, the server went away): at once;
- a run of timeouts: at least ``timeouts`` of them, spread over at least ``run`` seconds, with no
  call answered in between (a stalled or unreachable server answers nobody; a slow process still
  sees replies arrive, and each answered call ends the run). A timeout noticed more than ``slack``
  seconds after its deadline does not count: the process itself was not running when it passed (a
  starved loop, a paused process), so it says nothing about the server.

Once down (open), calls are not tried: they meet the outage policy at once. After the cooldown one
call is let through as a probe (half-open); its answer closes the breaker, its failure opens it
again for another cooldown. The cooldown is ``cooldown`` seconds after timeouts (a probe to a
stalled server costs its caller the whole bound) and ``refused_cooldown`` (0 s) after a refused or
reset connection (a probe is refused at once, so the first request after a restart is tracked
again). A probe that never reports (its caller was cancelled) is replaced by another one after
``cooldown``.

The object does no I/O and reads no clock of its own: the store feeds it :meth:`Health.answered`
and :meth:`Health.failed`, and asks :meth:`Health.admits` before a call; tests give it a fake clock.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable

__all__ = ["COOLDOWN", "RUN", "SLACK", "TIMEOUTS", "Failure", "Health", "State"]

TIMEOUTS = 3  # timeouts in a run before the store counts as down
RUN = 1.0  # seconds a run of timeouts must span (a burst of requests timing out together is one event)
SLACK = 0.1  # seconds past its deadline a timeout may be noticed and still count as the server's
COOLDOWN = 1.0  # seconds down after a run of timeouts before a probe is let through


class Failure(enum.Enum):
    """What a call met, as far as the store's health is concerned."""

    REFUSED = "refused"  # no connection could be made (nothing listens, host unreachable)
    RESET = "reset"  # the connection broke under the call (server went away)
    TIMEOUT = "timeout"  # no reply within the call's bound: a dead server, or only a slow process


class State(enum.Enum):
    CLOSED = "closed"  # healthy: calls are tried
    OPEN = "open"  # down: calls are not tried until the cooldown has passed
    HALF_OPEN = "half-open"  # one probe is out; the others wait for its answer (treated as down)


class Health:
    """The breaker of one store (shared by its threads and event loops; see the module docs)."""

    def __init__(self, *, timeouts: int = TIMEOUTS, run: float = RUN, cooldown: float = COOLDOWN,
                 refused_cooldown: float = 0.0, slack: float = SLACK,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if timeouts < 1:
            raise ValueError(f"timeouts must be at least 1, not {timeouts!r}")
        if not run >= 0 or not cooldown >= 0 or not refused_cooldown >= 0 or not slack >= 0:
            raise ValueError("run, cooldown, refused_cooldown and slack are seconds >= 0")
        self.timeouts = timeouts
        self.run = run
        self.cooldown = cooldown
        self.refused_cooldown = refused_cooldown
        self.slack = slack
        self.clock = clock
        self.state = State.CLOSED
        self.cause: Failure | None = None  # what opened the breaker, while it is not closed
        self._run_count = 0
        self._run_began = 0.0
        self._since = 0.0  # when the breaker opened, or when the probe went out
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        return self.state is not State.CLOSED

    def admits(self) -> bool:
        """Whether to try the store now: always while closed; once down, only the probe."""
        state = self.state
        if state is State.CLOSED:  # every admission asks: no lock, no property
            return True
        with self._lock:
            now = self.clock()
            if self.state is State.CLOSED:
                return True
            wait = self.cooldown if self.state is State.HALF_OPEN or self.cause is Failure.TIMEOUT \
                else self.refused_cooldown
            if now - self._since < wait:
                return False
            self.state, self._since = State.HALF_OPEN, now  # this caller is the probe
            return True

    def answered(self) -> None:
        """A call was answered (any reply, errors included): the store is there."""
        if self.state is State.CLOSED and not self._run_count:
            return  # the hot path: nothing to change, no lock
        with self._lock:
            self.state, self.cause, self._run_count = State.CLOSED, None, 0

    def failed(self, failure: Failure, *, late: float = 0.0) -> bool:
        """A call met ``failure``; whether the store now counts as down. ``late``: seconds past its
        deadline a timeout was noticed (beyond ``slack``, the process was not running: not counted)."""
        if failure is Failure.TIMEOUT and late > self.slack and not self.down:
            return False
        with self._lock:
            now = self.clock()
            if self.state is not State.CLOSED:
                if self.state is State.HALF_OPEN:  # the probe failed (or a call begun before the outage)
                    self.state, self._since, self.cause = State.OPEN, now, failure
                return True
            if failure is not Failure.TIMEOUT:
                self._open(now, failure)
                return True
            if not self._run_count:
                self._run_began = now
            self._run_count += 1
            if self._run_count >= self.timeouts and now - self._run_began >= self.run:
                self._open(now, failure)
                return True
            return False

    def _open(self, now: float, failure: Failure) -> None:
        self.state, self._since, self.cause, self._run_count = State.OPEN, now, failure, 0
