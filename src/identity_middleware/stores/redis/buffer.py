"""The write-behind settlement buffer: thread-safe, batched, in-flight aware, kept through outages.

Each settlement is summed, as it is added, into the open charge of its identity and time window
(:class:`.plans.charges.Charge`): the buffer holds sums, not requests. A flush takes up to 500
charges per round trip (each with the id it got when it opened). Any thread or loop may flush; each
batch taken is marked in flight until its write is over, so a read that flushes first also waits for
batches other flushes hold. A batch that meets an outage (or a cancellation) goes back to the
front of the queue as the charges it was, and is retried after the next successful call: Redis
may have applied it before the reply was lost (a timeout, a broken connection), and the settle
script skips a charge whose id it has already recorded, so a retry never counts it twice. A batch
Redis refuses outright (a reply it would give again) is logged and dropped rather than block the
rest. The buffer's size is its charges and the reservations they release (a request without an
estimate adds nothing to it); beyond ``limit`` the oldest charges are dropped, with an error log.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import logging
import threading
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import NoReturn

from ...core.admission import Settlement
from ...core.errors import StoreUnavailable
from ...core.periods import UTC
from . import unwritten
from .keys import Window
from .plans.charges import Charge, Open, sum_into
from .transport import Landed, Unreplicated

logger = logging.getLogger("identity_middleware.stores.redis")

BATCH = 500  # charges per round trip
INFLIGHT_WAIT = 10.0  # seconds a read waits for other flushes' batches to land

Batch = list[Charge]


def _countable(charge: Charge, start: datetime) -> str | None:
    """``charge`` as an admission in the window starting at ``start`` counts it itself (its part of
    :mod:`.unwritten`'s string); ``None`` when it cannot (another window's, or one that releases
    reservations or charges a lease: written first)."""
    if charge.window.start != start or charge.held or charge.scoped or charge.leased:
        return None
    usage = charge.usage
    return unwritten.charge(usage.cost, usage.input_tokens + usage.output_tokens, charge.id)


def _unreplicated(error: BaseException) -> bool:
    return isinstance(error, StoreUnavailable) and isinstance(error.__cause__, Unreplicated)


class Flight:
    """A batch being written: its charges by identity, and a future for whoever waits for it, made
    only when someone does (most flushes end unwatched; a future with its condition costs each one)."""

    __slots__ = ("charges", "future")

    def __init__(self, batch: Batch) -> None:
        self.charges: dict[str, list[Charge]] = {}
        for charge in batch:
            self.charges.setdefault(charge.identity_id, []).append(charge)
        self.future: concurrent.futures.Future[None] | None = None


class SettlementBuffer:
    def __init__(self, limit: int, window: Callable[[datetime], Window],
                 taken: Callable[[Settlement], object] | None = None) -> None:
        """``window`` maps an instant to its time window; ``taken`` sees each settlement as it is
        buffered (leasing takes its cost off its lease)."""
        self.limit = limit
        self.pending: Open = {}  # open, never sent: by identity and window start
        # The window starts of the charges in ``pending`` (or more: emptied only with it), so an
        # admission finds its identity's open charge with a lookup, not a scan, while there is one.
        self._pending_starts: set[datetime] = set()
        self.unsure: collections.deque[Charge] = collections.deque()  # sent, not known to have landed
        self.retry_due = False  # an outage left settlements here: the next successful call writes them
        self._window = window
        self._taken_hook = taken
        self._pending_count = 0  # settlements summed in ``pending``
        self._unsure_count = 0  # settlements in ``unsure``
        self._size = 0  # charges buffered and the reservations they release: what ``limit`` bounds
        self._outage = False
        self._inflight: set[Flight] = set()  # batches being written
        self._lock = threading.Lock()

    @property
    def outage(self) -> bool:
        """A write met an outage, and what it left here is not written yet."""
        return self._outage

    def __len__(self) -> int:
        """Settlements buffered."""
        return self._pending_count + self._unsure_count

    @property
    def busy(self) -> bool:
        """Settlements buffered, or a batch being written by some thread or loop."""
        return bool(self.pending or self._unsure_count or self._inflight)

    def holds(self, identity_id: str) -> bool:
        """Whether usage of ``identity_id`` is buffered or being written."""
        with self._lock:
            return any(key[0] == identity_id for key in self.pending) \
                or any(charge.identity_id == identity_id for charge in self.unsure) \
                or any(identity_id in flight.charges for flight in self._inflight)

    def unwritten(self, identity_id: str, start: datetime) -> str | None:
        """For an admission of ``identity_id`` in the time window starting at ``start``: ``None`` when
        its buffered usage must be written first (a charge of another window, or one that releases
        reservations or charges a lease), else its charges of this window — open, being written, or
        left unsure by an outage — whose usage the admission counts itself, each unless its marker
        says Redis has applied it (so one being written meanwhile is counted once), as they are now:
        :mod:`.unwritten`'s string (``""``: none)."""
        # Per admission, under load: no list, generator or copy (each object made is one more for
        # the garbage collector, whose young collections walk every request's suspended coroutines).
        found = ""
        with self._lock:
            if self.unsure:
                for charge in self.unsure:
                    if charge.identity_id == identity_id:
                        if (part := _countable(charge, start)) is None:
                            return None
                        found = f"{found} {part}" if found else part
            for flight in self._inflight:
                for charge in flight.charges.get(identity_id, ()):
                    if (part := _countable(charge, start)) is None:
                        return None
                    found = f"{found} {part}" if found else part
            starts = self._pending_starts
            if not starts or (len(starts) == 1 and start in starts):
                if (open_charge := self.pending.get((identity_id, start))) is not None:
                    if (part := _countable(open_charge, start)) is None:
                        return None
                    found = f"{found} {part}" if found else part
            else:  # a time window just ended: a charge of the last one must be written first
                for (owner, _), charge in self.pending.items():
                    if owner == identity_id:
                        if (part := _countable(charge, start)) is None:
                            return None
                        found = f"{found} {part}" if found else part
        return found

    def charges(self) -> list[Charge]:
        """Every charge buffered, oldest first (those sent and not known to have landed first)."""
        with self._lock:
            return [*self.unsure, *self.pending.values()]

    def add(self, settlement: Settlement) -> None:
        if self._taken_hook is not None:
            self._taken_hook(settlement)
        # Stamped now if it is not, so a flush after midnight still charges the day the request ended.
        now = settlement.now if settlement.now is not None else datetime.now(UTC)
        window = self._window(now)
        with self._lock:
            self._size += sum_into(self.pending, settlement, window, now)
            self._pending_starts.add(window.start)
            self._pending_count += 1
            if self._size > self.limit:
                self._trim()

    def _trim(self) -> None:
        """Drop the oldest charges until the buffer is within its limit (the lock held)."""
        while self._size > self.limit:
            if self.unsure:
                charge = self.unsure.popleft()
                self._unsure_count -= charge.count
            else:
                charge = self.pending.pop(next(iter(self.pending)))
                self._pending_count -= charge.count
            self._size -= 1 + len(charge.held)
            logger.error("settlement buffer full (%d): dropped the usage of %d requests of %s (cost %d nano-USD)",
                         self.limit, charge.count, charge.identity_id, charge.usage.cost)

    def drain(self, write: Callable[[Batch], object]) -> None:
        """Write everything buffered, a batch at a time (raises what a write raised; see module docs).
        A batch the master applied but too few replicas acknowledged (``WAIT``) is kept, and the
        batches after it are still written (to the master), then it is raised."""
        unreplicated: list[tuple[Batch, BaseException]] = []
        while True:
            batch, flight = self._take()
            if not batch:
                break
            try:
                write(batch)
            except BaseException as error:
                if _unreplicated(error):
                    unreplicated.append((batch, error))
                    continue
                self._keep(unreplicated, raising=False)
                self._raise(batch, error)
            finally:
                self._taken(flight)
        self._keep(unreplicated)
        self._recovered()

    async def adrain(self, write: Callable[[Batch], Awaitable[object]]) -> None:
        """:meth:`drain` for an async ``write``."""
        unreplicated: list[tuple[Batch, BaseException]] = []
        while True:
            batch, flight = self._take()
            if not batch:
                break
            try:
                await write(batch)
            except BaseException as error:
                if _unreplicated(error):
                    unreplicated.append((batch, error))
                    continue
                self._keep(unreplicated, raising=False)
                self._raise(batch, error)
            finally:
                self._taken(flight)
        self._keep(unreplicated)
        self._recovered()

    def _keep(self, unreplicated: list[tuple[Batch, BaseException]], *, raising: bool = True) -> None:
        """Buffer again the batches too few replicas acknowledged; raise the first one's error."""
        if not unreplicated:
            return
        for batch, _ in reversed(unreplicated):
            self._requeue(batch)
        if raising:
            raise unreplicated[0][1]

    def _watch(self) -> dict[concurrent.futures.Future[None], Flight]:
        """A future per batch in flight, each done once its write is over."""
        watched: dict[concurrent.futures.Future[None], Flight] = {}
        with self._lock:
            for flight in self._inflight:
                if flight.future is None:
                    flight.future = concurrent.futures.Future()
                watched[flight.future] = flight
        return watched

    def _forget(self, late: list[Flight]) -> None:
        """A loop that stopped mid-write never ends its batch: not waited for again."""
        with self._lock:
            self._inflight.difference_update(late)

    async def others_written(self) -> None:
        """Wait for the batches other flushes (threads, loops) took before this read."""
        pending = self._watch()
        if not pending:
            return
        _, late = await asyncio.wait([asyncio.wrap_future(future) for future in pending], timeout=INFLIGHT_WAIT)
        if late:
            self._forget([flight for future, flight in pending.items() if not future.done()])

    def wait_others(self) -> None:
        """:meth:`others_written` for a thread (the background writer's batch included)."""
        pending = self._watch()
        if pending:
            _, late = concurrent.futures.wait(pending, timeout=INFLIGHT_WAIT)
            if late:
                self._forget([pending[future] for future in late])

    def _take(self) -> tuple[Batch, Flight | None]:
        """Up to a batch of buffered charges (those sent before first, as they were; then open ones,
        closed to further settlements), and its :class:`Flight` (in flight until :meth:`_taken`)."""
        batch: Batch = []
        flight = None
        if not self.unsure and not self.pending:  # read without the lock: a drain's usual last look
            return batch, flight
        with self._lock:
            while self.unsure and len(batch) < BATCH:
                batch.append(self.unsure.popleft())
                self._unsure_count -= batch[-1].count
            room = BATCH - len(batch)
            if self.pending and room > 0:
                if len(self.pending) <= room:
                    fresh = list(self.pending.values())
                    self.pending = {}
                    self._pending_starts = set()
                else:
                    fresh = [self.pending.pop(key) for key in list(itertools.islice(self.pending, room))]
                self._pending_count -= sum(charge.count for charge in fresh)
                batch += fresh
            if batch:
                self._size -= sum(1 + len(charge.held) for charge in batch)
                flight = Flight(batch)
                self._inflight.add(flight)
        return batch, flight

    def _taken(self, flight: Flight | None) -> None:
        if flight is None:
            return
        with self._lock:
            self._inflight.discard(flight)
            future = flight.future
        if future is not None:
            future.set_result(None)

    def _raise(self, batch: Batch, error: BaseException) -> NoReturn:
        if isinstance(error, Landed):
            # Cancelled (e.g. the loop shutting down) after the batch was written and applied:
            # not re-buffered, so it is not counted twice.
            raise asyncio.CancelledError from None
        if isinstance(error, StoreUnavailable) or not isinstance(error, Exception):
            # Cancellation included: re-buffered rather than lost.
            self._requeue(batch)
        else:
            # Not an outage but a reply Redis will give again (e.g. a key of the wrong type):
            # retrying would block every later settlement behind it, so the batch is not kept.
            logger.error("redis refused %d settlements; their usage is not recorded: %s",
                         sum(charge.count for charge in batch),
                         ", ".join(f"{charge.count} of {charge.identity_id} (cost {charge.usage.cost} nano-USD)"
                                   for charge in batch))
        raise error

    def _requeue(self, batch: Batch) -> None:
        with self._lock:
            self.unsure.extendleft(reversed(batch))
            self._unsure_count += sum(charge.count for charge in batch)
            self._size += sum(1 + len(charge.held) for charge in batch)
        self.retry_due = True
        if not self._outage:
            self._outage = True
            logger.warning("redis unavailable: %d settlements buffered, retried when it answers", len(self))

    def _recovered(self) -> None:
        if self._outage and not self:
            self._outage = False
            self.retry_due = False
            logger.warning("redis answers again: buffered settlements written")
