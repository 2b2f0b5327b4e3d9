"""Writes the settlement buffer: now on the calling thread, on a loop's next tick, or as a loop ends."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ...core.errors import StoreUnavailable
from .arunner import arun
from .buffer import SettlementBuffer
from .loops import LoopClient
from .plans import Plans
from .runner import Runner

logger = logging.getLogger("identity_middleware.stores.redis")


class Writer:
    """Drains :class:`.buffer.SettlementBuffer` through the settle plan, sync or on a loop's client."""

    def __init__(self, buffer: SettlementBuffer, plans: Plans, runner: Runner) -> None:
        self.buffer = buffer
        self.plans = plans
        self.runner = runner

    def flush(self, runner: Runner | None = None) -> None:
        """Write every buffered settlement (raises :class:`StoreUnavailable`; they stay buffered)."""
        runner = self.runner if runner is None else runner
        self.buffer.drain(lambda batch: runner.run(self.plans.settle(batch)))

    async def adrain(self, state: LoopClient) -> None:
        await self.buffer.adrain(lambda batch: arun(state, self.plans.settle(batch)))

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
        if self.buffer:
            self.flush()
        with contextlib.suppress(StoreUnavailable):
            self.runner.run(self.plans.release_leases())

    async def aclose(self, state: LoopClient) -> None:
        await self.aflush(state)
        with contextlib.suppress(StoreUnavailable):
            await arun(state, self.plans.release_leases())

    async def retire(self, state: LoopClient) -> None:
        """At a loop's end (or aclose): write what is buffered before its client closes."""
        try:
            if self.buffer:
                await self.adrain(state)
        except StoreUnavailable:
            logger.warning("redis unavailable at loop shutdown; %d settlements stay buffered", len(self.buffer))
