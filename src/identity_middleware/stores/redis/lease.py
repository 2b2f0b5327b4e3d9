"""Leasing: budget headroom this process holds in Redis, and the local admissions it covers.

With ``RedisOptions(lease=Lease())`` a process takes, per identity, a *lease*: a share of the headroom
no one holds, kept in Redis as one more reservation (``"<amount>:~<lease id>"`` in the reservations
of each of the identity's budgets, scored by its expiry), so every other process's check counts it
and it expires by itself if this process dies. Requests the lease covers are admitted here with no
round trip; their usage is charged to spend and taken off the lease in one settle script call, so
``spend + reservations + leases <= amount`` holds as it does for reservations.

This module is the local half, with no I/O: :class:`Leases` keeps each lease's amount as Redis
holds it *at least* (a charge is taken off here when the request settles, before Redis hears of it;
an amount granted is added only once Redis has answered), so a process never admits on headroom
Redis does not hold for it. It is thread-safe (one lock, held for a few dict operations), and a
forked child starts with no lease (two processes must never admit on one).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from .options import Lease

_generation = 0  # bumped in a forked child: a table made before the fork starts over there


def _forked() -> None:
    global _generation
    _generation += 1


os.register_at_fork(after_in_child=_forked)


def covers(amount: int, used: int, estimate: int) -> bool:
    """Whether a lease of ``amount`` with ``used`` taken admits ``estimate``: the rule of
    :meth:`~identity_middleware.core.admission.BudgetState.blocks` (``>=`` blocks; an estimate must fit)."""
    return not (used >= amount or (estimate > 0 and used + estimate > amount))


@dataclass(slots=True, eq=False)
class Held:
    """One lease: its id, the amount Redis holds for it (at least), and what requests in flight took."""

    id: str
    tag: str
    amount: int  # nano-USD; negative while charges exceed it (Redis stops at 0: this errs low)
    grant: int  # the last amount added, whose half is the low-water mark
    deadline: float  # monotonic: when Redis lets it expire
    inflight: int = 0  # estimates of requests admitted on it and not settled yet
    used: bool = False  # admitted a request since its last renewal (an unused lease is left to expire)


@dataclass(slots=True, eq=False)
class Ask:
    """A lease call in flight (one per identity at a time): take a new lease, or renew ``lease_id``."""

    tag: str
    lease_id: str
    create: bool
    grow: bool
    sent: float  # monotonic, taken before the call: the lease's new deadline is sent + ttl
    stale: float  # after this, another call may be made (this one's answer is then ignored)
    give: int = 0  # what an admission's call gives back first: the lease beyond its requests in flight
    waiter: asyncio.Future[int] | None = None  # the amount added once answered, on the loop that asked
    charged: list[str] = field(default_factory=list)  # leases a settle call charges, in argument order

    def spec(self, fraction: float, ttl_ms: int) -> str:
        """The renewal as the scripts take it: ``"<lease id> <fraction> <ttl ms>"`` (fraction 0: extend only)."""
        return f"{self.lease_id} {fraction if self.grow else 0} {ttl_ms}"


class Leases:
    """This process's leases by identity hash tag, and the lease calls in flight (see module docs)."""

    def __init__(self, lease: Lease, clock: Callable[[], float] = time.monotonic) -> None:
        self.lease = lease
        self.clock = clock
        self._start()

    def _start(self) -> None:
        self._generation = _generation
        self._lock = threading.Lock()
        self._held: dict[str, Held] = {}
        self._by_id: dict[str, Held] = {}
        self._asks: dict[str, Ask] = {}

    def _check_fork(self) -> None:
        if self._generation != _generation:
            self._start()

    def held(self, tag: str) -> Held | None:
        self._check_fork()
        return self._held.get(tag)

    # -- the request path ----------------------------------------------------------------------
    def take(self, tag: str, estimate: int) -> Held | None:
        """The lease that admits a request of ``estimate`` here (its estimate now taken), or ``None``."""
        self._check_fork()
        with self._lock:
            held = self._held.get(tag)
            if held is None or self.clock() >= held.deadline - self.lease.ttl / 2:
                return None
            if not covers(held.amount, held.inflight, estimate):
                return None
            held.inflight += estimate
            held.used = True
            return held

    def settled(self, lease_id: str, estimate: int, cost: int) -> None:
        """A request admitted on ``lease_id`` ended: its estimate is released and its cost taken off."""
        self._check_fork()
        with self._lock:
            held = self._by_id.get(lease_id)
            if held is not None:
                held.inflight -= estimate
                held.amount -= cost

    def waiter(self, tag: str) -> asyncio.Future[int] | None:
        """The future of a lease call in flight for ``tag`` made on this loop, to wait for."""
        self._check_fork()
        ask = self._asks.get(tag)
        if ask is None or ask.waiter is None or ask.waiter.done() or self.clock() >= ask.stale:
            return None
        with contextlib.suppress(RuntimeError):
            if ask.waiter.get_loop() is asyncio.get_running_loop():
                return ask.waiter
        return None

    # -- lease calls -----------------------------------------------------------------------------
    def ask(self, tag: str, *, for_settle: bool = False) -> Ask | None:
        """A lease call to make now for ``tag``, or ``None`` when one is in flight (or, for a
        settle call, none is due). An admission asks to take a lease, or to grow the one held
        (giving back first what it holds beyond its requests in flight, see admit.lua);
        a settle call renews the one held, if it admitted anything since its last renewal or has
        requests in flight, once a
        quarter of its ttl has passed, growing it when it is below half its last grant."""
        self._check_fork()
        now = self.clock()
        with self._lock:
            current = self._asks.get(tag)
            if current is not None and now < current.stale:
                return None
            held = self._held.get(tag)
            if held is not None and now >= held.deadline:
                self._drop(held)
                held = None
            if for_settle:
                if held is None:
                    return None
                low = held.amount - held.inflight < held.grant / 2
                if not (held.used or held.inflight) or (not low and now < held.deadline - self.lease.ttl * 3 / 4):
                    return None
                held.used = False
                ask = Ask(tag, held.id, False, low, now, now + self.lease.ttl / 4)
            elif held is None:
                ask = Ask(tag, uuid.uuid4().hex, True, True, now, now + self.lease.ttl / 4)
            else:
                # Given back before Redis checks the request, taken off here first (Redis holds at least this).
                give = max(held.amount - held.inflight, 0)
                held.amount -= give
                ask = Ask(tag, held.id, False, True, now, now + self.lease.ttl / 4, give)
            with contextlib.suppress(RuntimeError):
                ask.waiter = asyncio.get_running_loop().create_future()
            self._asks[tag] = ask
            return ask

    def answered(self, ask: Ask, kept: bool, added: int) -> None:
        """Redis's answer to ``ask``: the lease is held (``kept``) with ``added`` more, or is not."""
        self._check_fork()
        with self._lock:
            if self._asks.get(ask.tag) is ask:
                del self._asks[ask.tag]
                held = self._by_id.get(ask.lease_id)
                if ask.create and kept:
                    previous = self._held.get(ask.tag)
                    if previous is not None:
                        self._drop(previous)
                    held = Held(ask.lease_id, ask.tag, added, added, ask.sent + self.lease.ttl)
                    self._held[ask.tag] = self._by_id[ask.lease_id] = held
                elif held is not None and not kept:
                    self._drop(held)
                elif held is not None:
                    held.amount += added
                    if ask.grow:
                        held.grant = added
                    held.deadline = ask.sent + self.lease.ttl
        self._wake(ask, added if kept else 0)

    def failed(self, ask: Ask) -> None:
        """``ask`` got no answer (an outage, a timeout): another call may be made at once."""
        with self._lock:
            if self._asks.get(ask.tag) is ask:
                del self._asks[ask.tag]
        self._wake(ask, 0)

    def covered(self, lease_id: str, charged: int, covered: int) -> None:
        """A settle call charged ``charged`` to a lease, which covered ``covered`` of it (-1: gone).
        What it did not cover was taken off here for nothing: it is given back."""
        self._check_fork()
        with self._lock:
            held = self._by_id.get(lease_id)
            if held is None:
                return
            if covered < 0:
                self._drop(held)
            else:
                held.amount += charged - covered

    def drop_all(self) -> list[Held]:
        """Forget every lease (to release them: :meth:`RedisStore.close`)."""
        self._check_fork()
        with self._lock:
            found = list(self._held.values())
            self._held.clear()
            self._by_id.clear()
            return found

    def _drop(self, held: Held) -> None:
        if self._held.get(held.tag) is held:
            del self._held[held.tag]
        self._by_id.pop(held.id, None)

    @staticmethod
    def _wake(ask: Ask, added: int) -> None:
        waiter = ask.waiter
        if waiter is None:
            return
        with contextlib.suppress(RuntimeError):  # its loop is closed: no one waits any more
            waiter.get_loop().call_soon_threadsafe(_finish, waiter, added)


def _finish(waiter: asyncio.Future[int], added: int) -> None:
    if not waiter.done():
        waiter.set_result(added)
