"""Writes the settlement buffer: now on the calling thread, on a loop's next tick, or as a loop ends."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import threading
from datetime import datetime
from typing import TYPE_CHECKING

from ...core.errors import StoreUnavailable
from .buffer import Batch, SettlementBuffer
from .loops import LoopClient
from .options import LINGER, Wait
from .plans import Plans
from .replication import replicated
from .runner import Runner, arun, within
from .steps import Plan

if TYPE_CHECKING:
    from .background import BackgroundWriter

logger = logging.getLogger("identity_middleware.stores.redis")


class _WriteFirst(enum.Enum):
    WRITE_FIRST = enum.auto()


WRITE_FIRST = _WriteFirst.WRITE_FIRST  # the buffer holds usage an admission must see written first


class Writer:
    """Drains :class:`.buffer.SettlementBuffer` through the settle plan, sync or on a loop's client."""

    def __init__(self, buffer: SettlementBuffer, plans: Plans, runner: Runner, linger: float = LINGER,
                 wait: Wait | None = None) -> None:
        self.buffer = buffer
        self.plans = plans
        self.runner = runner
        self.wait = wait  # a batch counts as written once replicas acknowledged it (.replication)
        leasing = plans.leasing
        if leasing is not None:  # a lease's renewal rides the settlement batch
            linger = min(linger, leasing.leases.lease.ttl / 4)
        self.linger = linger
        self._thread: BackgroundWriter | None = None
        self._lock = threading.Lock()

    @property
    def background(self) -> BackgroundWriter:
        """The writer thread of sync settles, made by the first one (an async store never has one)."""
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    from .background import BackgroundWriter

                    self._thread = BackgroundWriter(self.flush, self.buffer.__len__, self.linger)
        return self._thread

    def _stop_background(self) -> None:
        if self._thread is not None:
            self._thread.stop()  # joins at most its current write

    def flush(self, runner: Runner | None = None) -> None:
        """Write every buffered settlement (raises :class:`StoreUnavailable`; they stay buffered)."""
        runner = self.runner if runner is None else runner
        if self.buffer:
            runner.transport.follow_master()
        self.buffer.drain(lambda batch: runner.run(self.settle(batch)))

    def settle(self, batch: Batch) -> Plan[int]:
        """The settle plan of ``batch``, waiting for replicas when the store asks it to."""
        plan = self.plans.requests.settle(batch)
        return plan if self.wait is None else replicated(plan, self.wait)

    def flush_all(self, runner: Runner | None = None) -> None:
        """:meth:`flush`, then wait for the batches other threads are writing (one that came back,
        an outage, is written here or raised)."""
        self.flush(runner)
        self.buffer.wait_others()
        if self.buffer:
            self.flush(runner)

    def before_admission(self, external_id: str, runner: Runner, now: datetime) -> str:
        """Make a sync admission at ``now`` see this process's usage of ``external_id`` (of anyone's,
        where model, provider or workspace budgets may apply, or with leasing): written first; or,
        for an identity whose usage is only in charges of this time window (open, being written, or
        unsure after an outage), those charges' usage (:mod:`.unwritten`), which the admission counts
        itself unless their markers say Redis applied them (so it needs no round trip of its own)."""
        found = self.countable(external_id, now)
        if found is not WRITE_FIRST:
            return found
        with contextlib.suppress(StoreUnavailable):  # the admission then meets the outage itself
            self.flush_all(runner)
        return ""

    async def abefore_admission(self, external_id: str, state: LoopClient, now: datetime,
                                timeout: float | None) -> str:
        """:meth:`before_admission` on a loop: what is written first is awaited (at most ``timeout``),
        so a client's next request counts the one whose response just ended."""
        found = self.countable(external_id, now)
        if found is not WRITE_FIRST:
            return found
        with contextlib.suppress(StoreUnavailable):  # the admission then meets the outage itself
            if timeout is None:
                await self.aflush(state)
            else:
                await within(timeout, self.aflush(state))
        return ""

    def countable(self, external_id: str, now: datetime) -> str | _WriteFirst:
        """What an admission of ``external_id`` at ``now`` counts of the buffer itself (:mod:`.unwritten`;
        ``""``: nothing), or :data:`WRITE_FIRST` when the buffer must be written before it (asked
        while the buffer is busy)."""
        plans = self.plans
        ulid = plans.records.known_ulid(external_id)
        if ulid is not None and not plans.registry.may_have_globals():  # only this identity's usage matters
            if plans.leasing is None:
                found = self.buffer.unwritten(ulid, plans.records.window_of(now).start)
                if found is not None:
                    return found
            elif not self.buffer.holds(ulid):
                return ""
        return WRITE_FIRST

    async def adrain(self, state: LoopClient) -> None:
        if self.buffer:
            await state.transport.afollow_master()
        await self.buffer.adrain(lambda batch: arun(state.transport, self.settle(batch)))

    def schedule(self, state: LoopClient) -> None:
        """Write the buffer on this loop's next tick (one task at a time per loop)."""
        if state.flush_task is None or state.flush_task.done():
            state.flush_task = asyncio.get_running_loop().create_task(self._background(state))

    async def _background(self, state: LoopClient) -> None:
        with contextlib.suppress(StoreUnavailable):  # buffered, logged once per outage by the buffer
            await self.adrain(state)

    async def aflush(self, state: LoopClient) -> None:
        """Write the buffer, and wait for the batches other threads and loops are writing."""
        task = state.flush_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            await asyncio.wait([task])
        await self.adrain(state)
        await self.buffer.others_written()

    def close(self) -> None:
        """At the store's end: write the buffer, then give the leases' headroom back (if Redis does
        not answer, they expire by themselves)."""
        self._stop_background()
        if self.buffer.busy:
            self.flush_all()
        if self.plans.leasing is not None:
            with contextlib.suppress(StoreUnavailable):
                self.runner.run(self.plans.leasing.release_leases())

    async def aclose(self, state: LoopClient) -> None:
        self._stop_background()
        await self.aflush(state)
        if self.plans.leasing is not None:
            with contextlib.suppress(StoreUnavailable):
                await arun(state.transport, self.plans.leasing.release_leases())

    async def retire(self, state: LoopClient) -> None:
        """At a loop's end (or aclose): write what is buffered before its client closes."""
        try:
            if self.buffer:
                await self.adrain(state)
        except StoreUnavailable:
            logger.warning("redis unavailable at loop shutdown; %d settlements stay buffered", len(self.buffer))
