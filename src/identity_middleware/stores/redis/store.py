"""RedisStore: the Store protocol over Redis (standalone, Sentinel, Cluster), for threads and loops.

Each method runs a plan of :mod:`.plans`: sync ones with :mod:`.runner` on one thread-safe client (a
``BlockingConnectionPool``: under load a caller waits for a connection instead of failing), async
ones with :mod:`.arunner` on the running loop's client (:mod:`.loops`; script calls multiplexed by
:mod:`.mux` on a plain server). Settlements go through the write-behind :mod:`.buffer`: ``asettle``
returns at once and the loop's next tick writes everything buffered in one round trip; ``settle``
returns at once and a writer thread (:mod:`.background`) does the same, and a sync admission first
writes what is buffered of its identity. The reservation stays held in Redis until then, so
``spent + reserved <= amount`` holds throughout.
Reads that could see buffered usage (metrics, budget status, list, reset, delete) flush first, so a
caller sees its own writes. Outages raise :class:`StoreUnavailable`; settlements stay buffered
(:mod:`.writer` drains the buffer) and are applied at most once however often they are retried.
An admission waits at most ``request_timeout``, or not at all when a lease covers it (``lease=``,
:mod:`.lease`).
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import math
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, tzinfo
from typing import Any, TypeVar

from ...core.admission import Admission, AdmissionRequest, Settlement
from ...core.errors import StoreUnavailable
from ...core.models import DailyMetrics, Identity, IdentityInput, IdentityPage, Metrics
from ...core.ordering import IdentityOrder
from ...core.periods import UTC
from ..base import DEFAULT_RESERVATION_TTL, METRIC_DAYS, Store, check_days
from . import limits_uri
from .arunner import arun
from .background import LINGER
from .budgets import RedisBudgets
from .buffer import SettlementBuffer
from .clients import AsyncClient, ClientSpec, SyncClient
from .lease import Lease, Leases
from .loops import LoopClient, Loops
from .plans import SETTLE_ID_TTL, Plans
from .runner import Runner
from .steps import Plan
from .writer import Writer

T = TypeVar("T")
DailyList = builtins.list[DailyMetrics]
REQUEST_TIMEOUT = 0.25  # seconds an admission may wait for Redis before the outage policy applies


class RedisStore(RedisBudgets, Store):
    """Identities, budgets and metrics in Redis, shared by every app instance (see module docs)."""

    settles_before_await = True  # asettle buffers before it awaits anything

    def __init__(
        self,
        spec: ClientSpec | None = None,
        *,
        client: SyncClient | None = None,
        async_client_factory: Callable[[], AsyncClient] | None = None,
        prefix: str = "idm",
        tz: tzinfo = UTC,
        reservation_ttl: float = DEFAULT_RESERVATION_TTL,
        pending_limit: int = 100_000,
        request_timeout: float | None = REQUEST_TIMEOUT,
        settle_id_ttl: int = SETTLE_ID_TTL,
        global_budgets: bool = True,
        lease: Lease | None = None,
        linger: float = LINGER,
    ) -> None:
        if spec is None and (client is None or async_client_factory is None):
            raise ValueError("give a ClientSpec (use RedisStore.from_url) or both client and async_client_factory")
        if not math.isfinite(linger) or linger < 0:
            raise ValueError(f"linger must be a finite number of seconds >= 0, not {linger!r}")
        self.tz = tz
        self.reservation_ttl = reservation_ttl
        self._spec = spec
        self.request_timeout = request_timeout
        self._plans = Plans(prefix, tz, reservation_ttl, settle_id_ttl)
        self._plans.global_budgets = global_budgets
        self._plans.leases = Leases(lease) if lease is not None else None
        direct = spec is not None and spec.multiplexed
        self._runner = Runner(spec.sync_client if client is None and spec is not None else None, client, direct=direct)
        # The request path's sync calls (admit, settle) go through a client whose every wait is
        # bounded by request_timeout; a client passed in is used as it is.
        self._request_runner = self._runner
        if client is None and spec is not None and request_timeout is not None:
            self._request_runner = Runner(spec.bounded(request_timeout).sync_client, direct=direct)
        self._buffer = SettlementBuffer(pending_limit, self._plans.window_of, self._plans.settled_locally)
        self._writer = Writer(self._buffer, self._plans, self._runner, linger)
        self._loops = Loops(spec, async_client_factory, self._writer.retire)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "idm",
        tz: tzinfo = UTC,
        reservation_ttl: float = DEFAULT_RESERVATION_TTL,
        max_connections: int = 64,
        pool_timeout: float = 10.0,
        socket_timeout: float = 5.0,
        socket_connect_timeout: float = 2.0,
        pending_limit: int = 100_000,
        multiplex: bool = True,
        request_timeout: float | None = REQUEST_TIMEOUT,
        settle_id_ttl: int = SETTLE_ID_TTL,
        global_budgets: bool = True,
        lease: Lease | None = None,
        linger: float = LINGER,
        **client_options: Any,
    ) -> RedisStore:
        """``redis://``, ``rediss://``, ``unix:///path/redis.sock``, ``redis+sentinel://host:port/service``,
        ``redis+cluster://host:port``.

        ``max_connections`` caps each pool (per node on a Cluster); callers beyond it wait up to
        ``pool_timeout`` seconds. ``request_timeout`` bounds what the store may cost a request
        (admission; a sync settlement's write): past it, :class:`StoreUnavailable` and the
        middleware's ``on_store_error``; ``None`` leaves only the socket timeouts. ``settle_id_ttl``
        is how long Redis remembers an applied settlement batch, so that a retry within it is a
        no-op. ``global_budgets=False`` skips model, provider and workspace budgets on the request
        path (no registry reads: for apps with identity budgets only). ``multiplex=False`` sends
        async script calls through redis-py's pool even where one multiplexed connection per loop
        could carry them. ``lease=Lease()``: admissions with no round trip (see :class:`Lease`).
        ``linger``: seconds a sync process holds settled usage before writing it, so that each
        identity's requests meanwhile share one settle call (at most a quarter of a lease's ttl);
        its own admissions count it meanwhile, other processes see it that much later.
        Other keyword arguments go to the redis-py clients.
        """
        spec = ClientSpec(url, max_connections, pool_timeout, socket_timeout, socket_connect_timeout,
                          tuple(client_options.items()), multiplex)
        return cls(spec, prefix=prefix, tz=tz, reservation_ttl=reservation_ttl, pending_limit=pending_limit,
                   request_timeout=request_timeout, settle_id_ttl=settle_id_ttl, global_budgets=global_budgets,
                   lease=lease, linger=linger)

    @property
    def prefix(self) -> str:
        return self._plans.keys.prefix

    @property
    def rate_limit_storage_uri(self) -> str:
        """The same server as a ``limits`` storage URI, so rate limits live beside the budgets."""
        if self._spec is not None:
            return limits_uri.from_url(self._spec.url)
        return limits_uri.from_client(self._runner.client())

    # -- running plans ---------------------------------------------------------------------------
    def _client(self) -> SyncClient:
        return self._runner.client()

    def _run(self, plan: Plan[T], *, flush_first: bool = False, runner: Runner | None = None) -> T:
        runner = self._runner if runner is None else runner
        if flush_first and self._buffer.busy:
            self.flush()
        result = runner.run(plan)
        if self._buffer.retry_due and self._buffer:
            with contextlib.suppress(StoreUnavailable):
                self._writer.flush(runner)
        return result

    async def _loop(self) -> LoopClient:
        return await self._loops.get()

    async def _arun(self, plan: Plan[T], *, flush_first: bool = False, deadline: float | None = None) -> T:
        state = await self._loops.get()
        if flush_first and (self._buffer.busy or (state.flush_task is not None and not state.flush_task.done())):
            await self._writer.aflush(state)
        result = await arun(state, plan, deadline, landed_cancels=True)
        if self._buffer.retry_due and self._buffer:
            self._writer.schedule(state)
        return result

    # -- life ------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Write every buffered settlement (raises :class:`StoreUnavailable`; they stay buffered),
        and wait for those another thread is writing."""
        self._writer.flush_all()

    async def aflush(self) -> None:
        await self._writer.aflush(await self._loops.get())

    def close(self) -> None:
        """Flush, give the leases back, then release the sync client's connections (a client passed
        in is left open)."""
        try:
            self._writer.close()
        finally:
            self._runner.close()
            self._request_runner.close()

    async def aclose(self) -> None:
        """Flush, give the leases back, and close this loop's async client (and the sync one)."""
        state = await self._loops.get()
        try:
            await self._writer.aclose(state)
        finally:
            await self._loops.close(state)
            self._runner.close()
            self._request_runner.close()

    # -- identities ------------------------------------------------------------------------------
    def create(self, identity: IdentityInput) -> Identity:
        return self._run(self._plans.create(identity))

    async def acreate(self, identity: IdentityInput) -> Identity:
        return await self._arun(self._plans.create(identity))

    def retrieve(self, identity_id: str) -> Identity:
        return self._run(self._plans.retrieve(identity_id))

    async def aretrieve(self, identity_id: str) -> Identity:
        return await self._arun(self._plans.retrieve(identity_id))

    def update(self, identity_id: str, **fields: Any) -> Identity:
        return self._run(self._plans.update(identity_id, fields))

    async def aupdate(self, identity_id: str, **fields: Any) -> Identity:
        return await self._arun(self._plans.update(identity_id, fields))

    def delete(self, identity_id: str) -> None:
        self._run(self._plans.delete(identity_id), flush_first=True)

    async def adelete(self, identity_id: str) -> None:
        await self._arun(self._plans.delete(identity_id), flush_first=True)

    def list(self, limit: int = 10, starting_after: str | None = None, ending_before: str | None = None,
             search: str | None = None, tags: Sequence[str] | None = None, include_metrics: bool = False,
             include_budgets: bool = False, *, all_tags: Sequence[str] | None = None,
             order: IdentityOrder | str = IdentityOrder.CREATED) -> IdentityPage:
        plan = self._plans.list(limit, starting_after, ending_before, search, tags, include_metrics, include_budgets,
                                all_tags, IdentityOrder(order))
        return self._run(plan, flush_first=True)

    async def alist(self, limit: int = 10, starting_after: str | None = None, ending_before: str | None = None,
                    search: str | None = None, tags: Sequence[str] | None = None, include_metrics: bool = False,
                    include_budgets: bool = False, *, all_tags: Sequence[str] | None = None,
                    order: IdentityOrder | str = IdentityOrder.CREATED) -> IdentityPage:
        plan = self._plans.list(limit, starting_after, ending_before, search, tags, include_metrics, include_budgets,
                                all_tags, IdentityOrder(order))
        return await self._arun(plan, flush_first=True)

    # -- usage -----------------------------------------------------------------------------------
    def metrics(self, identity_id: str, *, now: datetime | None = None) -> Metrics:
        return self._run(self._plans.metrics(identity_id, now), flush_first=True)

    async def ametrics(self, identity_id: str, *, now: datetime | None = None) -> Metrics:
        return await self._arun(self._plans.metrics(identity_id, now), flush_first=True)

    def daily_metrics(self, identity_id: str, *, days: int = METRIC_DAYS, now: datetime | None = None) -> DailyList:
        return self._run(self._plans.daily_metrics(identity_id, check_days(days), now), flush_first=True)

    async def adaily_metrics(self, identity_id: str, *, days: int = METRIC_DAYS,
                             now: datetime | None = None) -> DailyList:
        return await self._arun(self._plans.daily_metrics(identity_id, check_days(days), now), flush_first=True)

    # -- the request path ------------------------------------------------------------------------
    def admit(self, request: AdmissionRequest) -> Admission:
        """Bounded by ``request_timeout`` (then :class:`StoreUnavailable`; Redis may still apply it).
        Usage this process has not yet written of the same identity (of any, where model, provider
        or workspace budgets may apply) is counted, so a request sees the ones before it: by the
        admission itself while it is an open charge of this time window, else written first."""
        if self._plans.leases is not None and (admission := self._plans.admit_locally(request)) is not None:
            return admission
        unwritten = None
        if self._buffer.busy:
            now = request.now if request.now is not None else datetime.now(UTC)
            unwritten = self._writer.before_admission(request.external_id, self._request_runner, now)
            if unwritten is not None:  # counted by the admission at the same instant it was looked up for
                request = dataclasses.replace(request, now=now)
        return self._run(self._plans.admit(request, unwritten=unwritten), runner=self._request_runner)

    def aadmit(self, request: AdmissionRequest) -> Coroutine[Any, Any, Admission]:
        # Not a coroutine of its own when it need not be: with the loop's client known and nothing
        # buffered, the runner's coroutine is the whole admission (one object fewer alive per
        # request while Redis answers; see IdentityMiddleware.__call__).
        if self._plans.leases is None:
            state = self._loops.cached()
            if state is not None and not self._buffer.busy:
                return arun(state, self._plans.admit(request), self.request_timeout, landed_cancels=True)
            return self._aadmit(request)
        return self._aadmit_leased(request)

    async def _aadmit(self, request: AdmissionRequest) -> Admission:
        """An admission that counts what this process has buffered of the identity (the usage of the
        requests whose responses ended before it), as :meth:`admit` does."""
        state = await self._loops.get()
        unwritten = None
        if self._buffer.busy:
            now = request.now if request.now is not None else datetime.now(UTC)
            unwritten = await self._writer.abefore_admission(request.external_id, state, now, self.request_timeout)
            if unwritten is not None:  # counted by the admission at the same instant it was looked up for
                request = dataclasses.replace(request, now=now)
        return await self._arun(self._plans.admit(request, unwritten=unwritten), deadline=self.request_timeout)

    async def _aadmit_leased(self, request: AdmissionRequest) -> Admission:
        found = await self._plans.aadmit_locally(request, self.request_timeout)
        if isinstance(found, Admission):
            return found
        if self._buffer.busy:
            state = await self._loops.get()
            await self._writer.abefore_admission(request.external_id, state, datetime.now(UTC), self.request_timeout)
        return await self._arun(found, deadline=self.request_timeout)

    def settle(self, settlement: Settlement) -> None:
        """Buffer; this process's writer thread writes the buffer ``linger`` seconds later, in one
        round trip for all it holds (:mod:`.background`). On an outage it stays buffered, is logged,
        and is retried (at most once applied); nothing is raised, so a caller never re-submits it."""
        self._buffer.add(settlement)
        self._writer.background.poke()

    async def asettle(self, settlement: Settlement) -> None:
        """Buffer; this loop writes the buffer on its next tick, in one round trip for all."""
        self._buffer.add(settlement)
        self._writer.schedule(self._loops.cached() or await self._loops.get())  # no coroutine when known
