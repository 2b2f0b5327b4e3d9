"""The write-behind settlement buffer: thread-safe, batched, in-flight aware, kept through outages.

Settlements wait here until a flush writes them, up to 500 per round trip. A flush seals what it
takes into charges (one per identity and time window, each with an id: :class:`.plans.requests.Charge`).
Any thread or loop may flush; each batch taken is marked in flight until its write is over, so a
read that flushes first also waits for batches other flushes hold. A batch that meets an outage
(or a cancellation) goes back to the front of the queue as the charges it was, and is retried
after the next successful call: Redis may have applied it before the reply was lost (a timeout, a
broken connection), and the settle script skips a charge whose id it has already recorded, so a
retry never counts it twice. A batch Redis refuses outright (a reply it would give again) is logged
and dropped rather than block the rest. Beyond ``limit`` buffered settlements the oldest are
dropped, with an error log.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import threading
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import NoReturn

from ...core.admission import Settlement
from ...core.errors import StoreUnavailable
from ...core.periods import UTC
from .plans.requests import Charge
from .steps import Landed

logger = logging.getLogger("identity_middleware.stores.redis")

BATCH = 500
INFLIGHT_WAIT = 10.0  # seconds a read waits for other flushes' batches to land

Batch = list[Charge]
Marker = concurrent.futures.Future[None]


class SettlementBuffer:
    def __init__(self, limit: int, seal: Callable[[list[Settlement]], Batch],
                 taken: Callable[[Settlement], object] = lambda settlement: None) -> None:
        """``taken`` sees each settlement as it is buffered (leasing takes its cost off its lease)."""
        self.limit = limit
        self.pending: collections.deque[Settlement] = collections.deque()  # never sent
        self.unsure: collections.deque[Charge] = collections.deque()  # sent, not known to have landed
        self.retry_due = False  # an outage left settlements here: the next successful call writes them
        self._seal = seal
        self._taken_hook = taken
        self._unsure_count = 0  # settlements in ``unsure``
        self._outage = False
        self._inflight: dict[Marker, set[str]] = {}  # batches being written -> their identities
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.pending) + self._unsure_count

    @property
    def busy(self) -> bool:
        """Settlements buffered, or a batch being written by some thread or loop."""
        return bool(self.pending or self._unsure_count or self._inflight)

    def holds(self, identity_id: str) -> bool:
        """Whether usage of ``identity_id`` is buffered or being written."""
        with self._lock:
            return any(settlement.identity_id == identity_id for settlement in self.pending) \
                or any(charge.identity_id == identity_id for charge in self.unsure) \
                or any(identity_id in ids for ids in self._inflight.values())

    def settlements(self) -> list[Settlement]:
        """Every settlement buffered, oldest first."""
        with self._lock:
            return [settlement for charge in self.unsure for settlement in charge.settlements] + list(self.pending)

    def add(self, settlement: Settlement) -> None:
        self._taken_hook(settlement)
        if settlement.now is None:
            # Stamped now, so a flush after midnight still charges the day the request ended.
            settlement = Settlement(settlement.identity_id, settlement.usage, settlement.reservation, datetime.now(UTC))
        self.pending.append(settlement)
        if len(self.pending) + self._unsure_count > self.limit:
            self._trim()

    def _trim(self) -> None:
        with self._lock:
            while len(self.pending) + self._unsure_count > self.limit:
                if self.unsure:
                    charge = self.unsure.popleft()
                    self._unsure_count -= len(charge.settlements)
                    lost = charge.settlements
                else:
                    lost = [self.pending.popleft()]
                for settlement in lost:
                    logger.error("settlement buffer full (%d): dropped the usage of %s (cost %d nano-USD)",
                                 self.limit, settlement.identity_id, settlement.usage.cost)

    def drain(self, write: Callable[[Batch], object]) -> None:
        """Write everything buffered, a batch at a time (raises what a write raised; see module docs)."""
        while True:
            batch, marker = self._take()
            if not batch:
                break
            try:
                write(batch)
            except BaseException as error:
                self._raise(batch, error)
            finally:
                self._taken(marker)
        self._recovered()

    async def adrain(self, write: Callable[[Batch], Awaitable[object]]) -> None:
        """:meth:`drain` for an async ``write``."""
        while True:
            batch, marker = self._take()
            if not batch:
                break
            try:
                await write(batch)
            except BaseException as error:
                self._raise(batch, error)
            finally:
                self._taken(marker)
        self._recovered()

    async def others_written(self) -> None:
        """Wait for the batches other flushes (threads, loops) took before this read."""
        with self._lock:
            pending = list(self._inflight)
        if not pending:
            return
        _, late = await asyncio.wait([asyncio.wrap_future(marker) for marker in pending], timeout=INFLIGHT_WAIT)
        if late:  # a loop that stopped mid-write never ends its batch: not waited for again
            with self._lock:
                for marker in pending:
                    if not marker.done():
                        self._inflight.pop(marker, None)

    def wait_others(self) -> None:
        """:meth:`others_written` for a thread (the background writer's batch included)."""
        with self._lock:
            pending = list(self._inflight)
        if pending:
            _, late = concurrent.futures.wait(pending, timeout=INFLIGHT_WAIT)
            if late:
                with self._lock:
                    for marker in late:
                        self._inflight.pop(marker, None)

    def _take(self) -> tuple[Batch, Marker]:
        """Up to a batch of buffered settlements as charges (those sent before first, as they were),
        and a marker that is done once their write is over."""
        batch: Batch = []
        fresh: list[Settlement] = []
        taken = 0
        marker: Marker = concurrent.futures.Future()
        with self._lock:
            while self.unsure and taken < BATCH:
                charge = self.unsure.popleft()
                self._unsure_count -= len(charge.settlements)
                taken += len(charge.settlements)
                batch.append(charge)
            while self.pending and taken < BATCH:
                fresh.append(self.pending.popleft())
                taken += 1
            if taken:
                self._inflight[marker] = {charge.identity_id for charge in batch} | {s.identity_id for s in fresh}
        if fresh:
            batch += self._seal(fresh)
        return batch, marker

    def _taken(self, marker: Marker) -> None:
        with self._lock:
            self._inflight.pop(marker, None)
        marker.set_result(None)

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
            settlements = [settlement for charge in batch for settlement in charge.settlements]
            logger.error("redis refused %d settlements; their usage is not recorded: %r", len(settlements), settlements)
        raise error

    def _requeue(self, batch: Batch) -> None:
        with self._lock:
            self.unsure.extendleft(reversed(batch))
            self._unsure_count += sum(len(charge.settlements) for charge in batch)
        self.retry_due = True
        if not self._outage:
            self._outage = True
            logger.warning("redis unavailable: %d settlements buffered, retried when it answers", len(self))

    def _recovered(self) -> None:
        if self._outage and not self:
            self._outage = False
            self.retry_due = False
            logger.warning("redis answers again: buffered settlements written")
