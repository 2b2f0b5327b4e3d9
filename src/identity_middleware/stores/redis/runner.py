"""Drives plans over a transport (:mod:`.transport`): sync on a thread, async on the running loop.

A plan is a generator: it yields a step, the runner has the transport execute it and sends the
reply back, or throws the reply's error (a ``ResponseError``) in at the ``yield``. Connection
trouble never reaches a plan (:func:`.transport.down`: a Cluster's unroutable moments included): it
is raised as :class:`StoreUnavailable`, as are the replies that
mean "not now" (:data:`.transport.UNSERVED`); on ``READONLY`` or ``NOREPLICAS`` the transport's
connections are dropped first, so the next call finds the master.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import redis.exceptions

from ...core.errors import StoreUnavailable
from .steps import Plan
from .transport import FAULTS, AsyncTransport, Landed, SyncTransport, demoted, down, refused, unavailable

if TYPE_CHECKING:
    from .verdicts import Verdicts

T = TypeVar("T")


class Runner:
    """Drives plans on one thread-safe sync transport, built on first use."""

    def __init__(self, build: Callable[[], SyncTransport], *, owned: bool = True) -> None:
        """``owned``: :meth:`close` closes the transport (not one over a client passed in)."""
        self._build = build
        self._owned = owned
        self._transport: SyncTransport | None = None
        self._lock = threading.Lock()

    @property
    def built(self) -> SyncTransport | None:
        """The transport if it is built (no connection is made here)."""
        return self._transport

    @property
    def transport(self) -> SyncTransport:
        if self._transport is None:
            with self._lock:
                if self._transport is None:
                    self._transport = self._build()
        return self._transport

    def run(self, plan: Plan[T]) -> T:
        """The plan's result; connection trouble raised as :class:`StoreUnavailable`."""
        try:
            step = next(plan)
            execute = self.transport.execute
            while True:
                try:
                    reply = execute(step)
                except redis.exceptions.ResponseError as error:  # a reply: the plan may handle it
                    if (outage := refused(error)) is not None:
                        if demoted(error):
                            self.transport.demoted()
                        raise outage from error
                    step = plan.throw(error)
                else:
                    step = plan.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        except FAULTS as error:
            if not down(error):
                raise
            raise unavailable(error) from error

    def close(self) -> None:
        """Release the connections of a transport built here (a client given stays open)."""
        transport, self._transport = self._transport, None
        if transport is not None and self._owned:
            transport.close()


async def arun(transport: AsyncTransport, plan: Plan[T], timeout: float | None = None, *,
               landed_cancels: bool = False, verdicts: Verdicts | None = None, node: str | None = None) -> T:
    """The plan's result; connection trouble raised as :class:`StoreUnavailable` (the twin of
    :meth:`Runner.run`). :class:`.transport.Landed` passes through for the caller to judge (a
    flush), or with ``landed_cancels`` is the cancellation it is (a read, an admission). With
    ``timeout``, the whole plan must be answered within that many seconds. With ``verdicts``, an
    admission on the request path: run only if the breaker of ``node`` lets it be tried, its outcome
    told to that breaker and its failure judged, as :meth:`.verdicts.Verdicts.aguarded` does around
    a coroutine (here without one: a coroutine fewer per admission)."""
    if verdicts is not None:
        health = verdicts.admitting(node, plan)
        began = time.monotonic()
    deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
    aexecute = transport.aexecute
    try:
        try:
            step = next(plan)
            while True:
                try:
                    reply = await aexecute(step, deadline)
                except redis.exceptions.ResponseError as error:  # a reply: the plan may handle it
                    if (outage := refused(error)) is not None:
                        if demoted(error):
                            await transport.ademoted()
                        raise outage from error
                    step = plan.throw(error)
                else:
                    step = plan.send(reply)
        except StopIteration as stop:
            result: T = stop.value
        except FAULTS as error:
            if not down(error):
                raise
            raise unavailable(error) from error
        except Landed:  # the batch was answered, but the caller was cancelled meanwhile
            if landed_cancels:
                raise asyncio.CancelledError from None
            raise
    except StoreUnavailable as error:
        if verdicts is None:
            raise
        raise verdicts.judged(error, time.monotonic() - began, health) from error
    if verdicts is not None:
        health.answered()
    return result


async def within(seconds: float, awaitable: Awaitable[T]) -> T:
    """``awaitable``'s result, or :class:`StoreUnavailable` once ``seconds`` have passed (it is then
    cancelled)."""
    try:
        async with asyncio.timeout(seconds):
            return await awaitable
    except TimeoutError:
        raise StoreUnavailable(f"redis: no reply within {seconds} s") from None
