"""RedisStore: the Store protocol over Redis (standalone, Sentinel, Cluster), for threads and loops.

Each method runs a plan of :mod:`.plans` with :mod:`.runner` over a transport (:mod:`.transport`):
sync ones on one thread-safe client (a ``BlockingConnectionPool``: under load a caller waits for a
connection instead of failing), async ones on the running loop's client (:mod:`.loops`); redis-py's
transport, or with ``multiplex`` on a plain server the accelerated ones (:mod:`.accelerated`).
Settlements go through the write-behind :mod:`.buffer`: ``asettle`` returns at once and the loop's
next tick writes everything buffered in one round trip; ``settle`` returns at once and a writer
thread (:mod:`.background`) does the same. An admission (sync or async) counts what this process has
buffered of its identity (or writes it first), so a client's next request sees the one before it.
The reservation stays held in Redis until then, so
``spent + reserved <= amount`` holds throughout.
Reads that could see buffered usage (metrics, budget status, list, reset, delete) flush first, so a
caller sees its own writes. Outages raise :class:`StoreUnavailable`; settlements stay buffered
(:mod:`.writer` drains the buffer) and are applied at most once however often they are retried.
An admission waits at most ``request_timeout``, or not at all when a lease covers it
(``RedisOptions(lease=Lease())``, :mod:`.lease`); past it the request is refused (:class:`StoreLate`)
unless the store's breaker (:attr:`RedisStore.health`) says Redis is down, and only then does the
outage policy apply (:mod:`.verdicts`). Every option is a field of :class:`.options.RedisOptions`.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import redis.cluster

from ...core.admission import Admission, AdmissionRequest, Settlement
from ...core.budgets import BudgetChanges, BudgetOrder, BudgetSpec, BudgetUsage, ScopedBudget, ScopedBudgetPage
from ...core.check import BudgetCheck, CheckRequest
from ...core.credits import TopUp
from ...core.errors import StoreMisconfigured, StoreUnavailable
from ...core.metrics import HourlyMetrics, UsageOver
from ...core.models import Budget, BudgetStatus, DailyMetrics, Identity, IdentityInput, IdentityPage, Metrics
from ...core.money import Money
from ...core.ordering import IdentityOrder
from ...core.periods import UTC, Period
from ..base import METRIC_DAYS, METRIC_HOURS, Store, check_days, check_hours, check_span
from ..health import Health
from ..refusals import Refusal, check_refusal_limit
from ..urls import check_url
from .buffer import SettlementBuffer
from .clients import AsyncClient, ClientSpec, SyncClient
from .keys import identity_tag
from .loops import LoopClient, Loops
from .options import RedisOptions
from .plans import Plans, sessions
from .plans.refusals import recent_refusals, refusal_key
from .replication import replicated
from .runner import Runner, arun
from .steps import Plan
from .transport import RedisPy
from .verdicts import Shards, Verdicts, node_of
from .writer import WRITE_FIRST, Writer

if TYPE_CHECKING:  # leasing is loaded only when it is on
    from ..notifiers import Notifier
    from .lease import Ask

T = TypeVar("T")
DailyList = builtins.list[DailyMetrics]


class RedisStore(Store):
    """Identities, budgets and metrics in Redis, shared by every app instance (see module docs)."""


    def __init__(self, url: str | None = None, options: RedisOptions | None = None, *,
                 client: SyncClient | None = None, async_client_factory: Callable[[], AsyncClient] | None = None,
                 providers: Mapping[str, str] | None = None, notifiers: Mapping[str, Notifier] | None = None,
                 notifier_secret: str | bytes | None = None) -> None:
        """A store on the server at ``url`` (see :meth:`from_url`), or on the clients given: a sync
        ``client``, an ``async_client_factory`` called once per event loop, or both (any
        ``decode_responses``). A store given one of them serves only that side: a WSGI or Django app
        needs the sync client, an ASGI app the factory. ``options``: :class:`RedisOptions`, how it
        reaches and keeps Redis. ``providers``, ``notifiers``, ``notifier_secret``: the budgets'
        provider map and where their alerts go, as every store takes them
        (:class:`~identity_middleware.stores.options.StoreOptions`)."""
        if (url is None) == (client is None and async_client_factory is None):
            raise ValueError("give a URL (RedisStore.from_url(url)) or the clients: client= (sync), "
                             "async_client_factory= (async), or both")
        self._store_options(providers, notifiers, notifier_secret)
        options = RedisOptions() if options is None else options
        self.options = options
        self.tz = options.tz
        self.reservation_ttl = options.reservation_ttl
        self.request_timeout = options.request_timeout
        if url is not None and check_url(url).startswith("memory:"):
            raise StoreMisconfigured("memory:// is not a Redis URL: use MemoryStore() or store_from_url()")
        spec = ClientSpec.of(url, options) if url is not None else None
        self._verdicts = Verdicts(Shards(options.breaker, options.clock), options.request_timeout, url)
        self._spec = spec
        # On a Cluster, an admission is judged by the breaker of its identity's master (.verdicts.Shards).
        self._sharded = spec.is_cluster if spec is not None else isinstance(client, redis.cluster.RedisCluster)
        if options.wait is not None and self._sharded:
            raise ValueError("RedisOptions(wait=...) cannot guard a Redis Cluster: a Cluster client sends WAIT to a "
                             "node of its choosing, not on the connection that wrote; use min-replicas-to-write")
        leases = None
        if options.lease is not None:
            from .lease import Leases

            leases = Leases(options.lease, options.clock)
        self._plans = plans = Plans(options.prefix, options.tz, options.reservation_ttl, options.settle_id_ttl,
                                    global_budgets=options.global_budgets, leases=leases,
                                    clock=options.clock)
        plans.registry.providers = self.providers
        plans.registry.notify = self.alerts
        if spec is None:
            self._runner = self._request_runner = Runner(partial(_given, client), owned=False)
        else:
            self._runner = self._request_runner = Runner(spec.sync_transport)
            # The request path's sync calls (admit, settle) go through a client whose every wait
            # is bounded by request_timeout; a client passed in is used as it is.
            if options.request_timeout is not None:
                self._request_runner = Runner(spec.bounded(options.request_timeout).sync_transport)
        self._buffer = SettlementBuffer(options.pending_limit, plans.records.window_of,
                                        plans.leasing.settled_locally if plans.leasing is not None else None)
        self._writer = Writer(self._buffer, plans, self._runner, options.linger, options.wait)
        self._writer_thread = options.writer_thread
        self._loops = Loops(spec, async_client_factory, self._writer.retire)

    @classmethod
    def from_url(cls, url: str, /, options: RedisOptions | None = None, *,
                 providers: Mapping[str, str] | None = None, notifiers: Mapping[str, Notifier] | None = None,
                 notifier_secret: str | bytes | None = None, **fields: Any) -> RedisStore:
        """``redis://``, ``rediss://``, ``unix:///path/redis.sock``, ``redis+sentinel://host:port/service``,
        ``redis+cluster://host:port``; ``options`` (:class:`RedisOptions`), or its fields as keyword
        arguments (other keyword arguments go to the redis-py clients); ``providers``, ``notifiers``
        and ``notifier_secret`` as for :class:`RedisStore`."""
        if fields:
            base = {} if options is None else {each.name: getattr(options, each.name)
                                               for each in dataclasses.fields(options)}
            options = RedisOptions.of(**{**base, **fields})
        return cls(url, options, providers=providers, notifiers=notifiers, notifier_secret=notifier_secret)

    @property
    def prefix(self) -> str:
        return self._plans.records.keys.prefix

    @property
    def rate_limit_storage_uri(self) -> str:
        """The same server as a ``limits`` storage URI, so rate limits live beside the budgets."""
        from . import limits_uri

        if self._spec is not None:
            return limits_uri.from_url(self._spec.url)
        return limits_uri.from_client(self.client)

    @property
    def accelerated(self) -> bool:
        """Whether the accelerated transports (:mod:`.accelerated`) carry this store's script calls:
        ``RedisOptions.multiplex`` and a URL they can serve."""
        return self._spec is not None and self._spec.multiplexed

    @property
    def health(self) -> Health:
        """The breaker that decides when Redis is down for the request path (:mod:`..health`); on a
        Cluster each master has its own (:class:`.verdicts.Shards`), and this one judges the calls whose
        master is not known."""
        return self._verdicts.health

    @property
    def partly_down(self) -> bool:
        """Whether Redis, or on a Cluster one of its masters, is known to be down (a breaker open
        that calls still meet), or settlements an outage left unwritten wait in the buffer (Redis
        refusing writes while it answers reads: NOREPLICAS, a demoted master): the middleware ends
        an outage (its log line, the local allowance) only once it is not."""
        return self._verdicts.shards.down or self._buffer.outage

    def _node(self, external_id: str) -> str | None:
        """On a Cluster, the master serving ``external_id`` in the sync client's slot map, whose
        breaker judges its admission (``None``: the store's breaker)."""
        if not self._sharded:
            return None
        transport = self._request_runner.built
        return None if transport is None else node_of(transport.client, external_id)

    def _anode(self, external_id: str) -> str | None:
        """:meth:`_node` in the running loop's client's slot map."""
        if not self._sharded:
            return None
        state = self._loops.cached()
        return None if state is None else node_of(state.client, external_id)

    def known_identity(self, external_id: str) -> Identity | None:
        cached = self._plans.records.cached(identity_tag(external_id))
        return cached[1] if cached is not None else None

    @property
    def buffered(self) -> int:
        """Settlements this process holds that Redis has not been sent, or not known to have applied
        (an outage): written by the next flush, at most once each."""
        return len(self._buffer)

    @property
    def client(self) -> SyncClient:
        """The sync redis-py client this store uses (built on first use): for commands of your own
        on the same server."""
        return self._runner.transport.client  # type: ignore[no-any-return]

    # -- running plans ---------------------------------------------------------------------------

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
        result = await arun(state.transport, plan, deadline, landed_cancels=True)
        if self._buffer.retry_due and self._buffer:
            self._writer.schedule(state)
        return result

    # -- life ------------------------------------------------------------------------------------
    def check_ready(self) -> None:
        """:meth:`.verdicts.Verdicts.check`, on a client of its own (nothing pooled is left behind
        for a process that forks later)."""
        runner = Runner(self._spec.sync_transport) if self._spec is not None else self._runner
        try:
            self._verdicts.check(runner.run)
        finally:
            if runner is not self._runner:
                runner.close()

    async def acheck_ready(self) -> None:
        """:meth:`check_ready` on this event loop's client (the connection its requests will use)."""
        await self._verdicts.acheck(self._arun)

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
        return self._run(self._plans.identities.create(identity))

    async def acreate(self, identity: IdentityInput) -> Identity:
        return await self._arun(self._plans.identities.create(identity))

    def retrieve(self, identity_id: str) -> Identity:
        return self._run(self._plans.identities.retrieve(identity_id))

    async def aretrieve(self, identity_id: str) -> Identity:
        return await self._arun(self._plans.identities.retrieve(identity_id))

    def update(self, identity_id: str, **fields: Any) -> Identity:
        return self._run(self._plans.identities.update(identity_id, fields))

    async def aupdate(self, identity_id: str, **fields: Any) -> Identity:
        return await self._arun(self._plans.identities.update(identity_id, fields))

    def delete(self, identity_id: str) -> None:
        self._run(self._plans.identities.delete(identity_id), flush_first=True)

    async def adelete(self, identity_id: str) -> None:
        await self._arun(self._plans.identities.delete(identity_id), flush_first=True)

    def list(self, limit: int = 10, starting_after: str | None = None, ending_before: str | None = None,
             search: str | None = None, tags: Sequence[str] | None = None, include_metrics: bool = False,
             include_budgets: bool = False, *, all_tags: Sequence[str] | None = None,
             order: IdentityOrder | str = IdentityOrder.CREATED) -> IdentityPage:
        plan = self._plans.identities.list(limit, starting_after, ending_before, search, tags, include_metrics,
                                           include_budgets, all_tags, IdentityOrder(order))
        return self._run(plan, flush_first=True)

    async def alist(self, limit: int = 10, starting_after: str | None = None, ending_before: str | None = None,
                    search: str | None = None, tags: Sequence[str] | None = None, include_metrics: bool = False,
                    include_budgets: bool = False, *, all_tags: Sequence[str] | None = None,
                    order: IdentityOrder | str = IdentityOrder.CREATED) -> IdentityPage:
        plan = self._plans.identities.list(limit, starting_after, ending_before, search, tags, include_metrics,
                                           include_budgets, all_tags, IdentityOrder(order))
        return await self._arun(plan, flush_first=True)

    # -- usage -----------------------------------------------------------------------------------
    def metrics(self, identity_id: str, *, now: datetime | None = None) -> Metrics:
        return self._run(self._plans.budgets.metrics(identity_id, now), flush_first=True)

    async def ametrics(self, identity_id: str, *, now: datetime | None = None) -> Metrics:
        return await self._arun(self._plans.budgets.metrics(identity_id, now), flush_first=True)

    def daily_metrics(self, identity_id: str, *, days: int = METRIC_DAYS, now: datetime | None = None) -> DailyList:
        return self._run(self._plans.budgets.daily_metrics(identity_id, check_days(days), now), flush_first=True)

    async def adaily_metrics(self, identity_id: str, *, days: int = METRIC_DAYS,
                             now: datetime | None = None) -> DailyList:
        return await self._arun(self._plans.budgets.daily_metrics(identity_id, check_days(days), now), flush_first=True)

    # -- the request path ------------------------------------------------------------------------
    def hourly_metrics(self, identity_id: str, *, hours: int = METRIC_HOURS,
                       now: datetime | None = None) -> builtins.list[HourlyMetrics]:
        return self._run(self._plans.budgets.hourly_metrics(identity_id, check_hours(hours), now), flush_first=True)

    async def ahourly_metrics(self, identity_id: str, *, hours: int = METRIC_HOURS,
                              now: datetime | None = None) -> builtins.list[HourlyMetrics]:
        return await self._arun(self._plans.budgets.hourly_metrics(identity_id, check_hours(hours), now),
                                flush_first=True)

    def _recent(self, identity_id: str, days: int | None, hours: int | None, now: datetime | None) -> Plan[Metrics]:
        by_hour, span = check_span(days, hours)
        budgets = self._plans.budgets
        return budgets.recent_hours(identity_id, now, span) if by_hour else budgets.metrics(identity_id, now, span)

    def recent_metrics(self, identity_id: str, *, days: int | None = None, hours: int | None = None,
                       now: datetime | None = None) -> Metrics:
        return self._run(self._recent(identity_id, days, hours, now), flush_first=True)

    async def arecent_metrics(self, identity_id: str, *, days: int | None = None, hours: int | None = None,
                              now: datetime | None = None) -> Metrics:
        return await self._arun(self._recent(identity_id, days, hours, now), flush_first=True)

    def usage_over(self, identity_id: str, *, days: int | None = None, hours: int | None = None,
                   now: datetime | None = None) -> UsageOver:
        by_hour, span = check_span(days, hours)
        return self._run(self._plans.budgets.usage_over(identity_id, by_hour, span, now), flush_first=True)

    async def ausage_over(self, identity_id: str, *, days: int | None = None, hours: int | None = None,
                          now: datetime | None = None) -> UsageOver:
        by_hour, span = check_span(days, hours)
        return await self._arun(self._plans.budgets.usage_over(identity_id, by_hour, span, now), flush_first=True)

    def recent_refusals(self, limit: int = 50, *, now: datetime | None = None) -> builtins.list[Refusal]:
        plan = recent_refusals(refusal_key(self.prefix), check_refusal_limit(limit), now or datetime.now(UTC))
        return self._run(plan)

    async def arecent_refusals(self, limit: int = 50, *, now: datetime | None = None) -> builtins.list[Refusal]:
        plan = recent_refusals(refusal_key(self.prefix), check_refusal_limit(limit), now or datetime.now(UTC))
        return await self._arun(plan)

    def _admission(self, request: AdmissionRequest, ask: Ask | None = None, *, ask_lease: bool = True,
                   unwritten: str = "", now: datetime | None = None) -> Plan[Admission]:
        """The admit plan (which logs the refusal it answers with, :mod:`.plans.refusals`); ``now``, when
        given, the instant ``unwritten`` was looked up for; with ``Wait(admissions=True)``, answered
        once replicas hold it (:mod:`.replication`)."""
        plan = self._plans.requests.admit(request, ask, ask_lease=ask_lease, unwritten=unwritten, now=now)
        wait = self.options.wait
        if wait is not None and wait.admissions:
            plan = replicated(plan, wait)
        return plan

    def admit(self, request: AdmissionRequest) -> Admission:
        """Bounded by ``request_timeout``: past it :class:`StoreLate`, or :class:`StoreUnavailable`
        once the store is known to be down (:attr:`health`, :mod:`.verdicts`; Redis may still apply
        a late admission). Usage this process has not yet written of the same identity (of any,
        where model, provider or workspace budgets may apply) is counted, so a request sees the
        ones before it: by the admission itself while it is an open charge of this time window,
        else written first."""
        if self._plans.leasing is not None and (admission := self._plans.leasing.admit_locally(request)) is not None:
            return admission
        return self._verdicts.guarded(self._admit, request, self._node(request.external_id))

    def _registry_read(self, runner: Runner) -> None:
        """Read a stale registry of global budgets apart from the admission: if it cannot be read (on
        a Cluster, its master is down), the last good copy serves (:mod:`.plans.registry`)."""
        registry = self._plans.registry
        if registry.due():
            try:
                runner.run(registry.refresh())
            except StoreUnavailable:
                registry.failed()

    async def _aregistry_read(self, state: LoopClient, began: float) -> None:
        """:meth:`_registry_read` on this loop, within half what is left of the request's bound."""
        registry = self._plans.registry
        if registry.due():
            left = self._left(began)
            try:
                await arun(state.transport, registry.refresh(), None if left is None else left / 2, landed_cancels=True)
            except StoreUnavailable:
                registry.failed()

    def _admit(self, request: AdmissionRequest) -> Admission:
        self._registry_read(self._request_runner)
        unwritten, now = "", None
        if self._buffer.busy:
            now = request.now if request.now is not None else datetime.now(UTC)
            # counted by the admission at the same instant it was looked up for
            unwritten = self._writer.before_admission(request.external_id, self._request_runner, now)
        return self._run(self._admission(request, unwritten=unwritten, now=now), runner=self._request_runner)

    def aadmit(self, request: AdmissionRequest) -> Coroutine[Any, Any, Admission]:
        # Not a coroutine of its own when it need not be: with the loop's client known and nothing
        # to write first, the runner's coroutine is the whole admission (one object fewer alive per
        # request while Redis answers; see IdentityMiddleware.__call__), the buffered usage of the
        # identity, if any, counted by the admission itself.
        node = self._anode(request.external_id) if self._sharded else None
        if self._plans.leasing is None:
            state = self._loops.cached()
            if state is not None and not self._buffer.retry_due and not self._plans.registry.due():
                unwritten, now = "", None
                if self._buffer.busy:
                    now = request.now if request.now is not None else datetime.now(UTC)
                    found = self._writer.countable(request.external_id, now)
                    if found is WRITE_FIRST:
                        return self._verdicts.aguarded(self._aadmit(request), node)
                    unwritten = found  # counted at the instant it was looked up for
                plan = self._admission(request, unwritten=unwritten, now=now)
                return arun(state.transport, plan, self.request_timeout, landed_cancels=True,
                            verdicts=self._verdicts, node=node)
            return self._verdicts.aguarded(self._aadmit(request), node)
        return self._aadmit_leased(request, node)

    async def _aadmit(self, request: AdmissionRequest) -> Admission:
        """An admission that counts what this process has buffered of the identity (the usage of the
        requests whose responses ended before it), as :meth:`admit` does."""
        began = time.monotonic()
        state = await self._loops.get()
        await self._aregistry_read(state, began)
        unwritten, now = "", None
        if self._buffer.busy:
            now = request.now if request.now is not None else datetime.now(UTC)
            # counted by the admission at the same instant it was looked up for
            unwritten = await self._writer.abefore_admission(request.external_id, state, now, self.request_timeout)
        return await self._arun(self._admission(request, unwritten=unwritten, now=now),
                                deadline=self._left(began))

    def _left(self, began: float) -> float | None:
        """What is left since ``began`` of ``request_timeout``, the one bound of all an admission's
        steps (a write first, then the admission): a timeout past it is this process's lateness."""
        return None if self.request_timeout is None else max(0.0, self.request_timeout - (time.monotonic() - began))

    async def _aadmit_leased(self, request: AdmissionRequest, node: str | None) -> Admission:
        leasing = self._plans.leasing
        assert leasing is not None
        found: Admission | Ask | None = leasing.admit_locally(request)  # most: the lease's alone, no coroutine more
        if found is None:
            found = await leasing.await_lease(request, self.request_timeout)
        if isinstance(found, Admission):
            return found
        return await self._verdicts.aguarded(self._aadmit_unleased(request, found), node)

    async def _aadmit_unleased(self, request: AdmissionRequest, found: Ask | None) -> Admission:
        began = time.monotonic()
        await self._aregistry_read(await self._loops.get(), began)
        if self._buffer.busy:
            state = await self._loops.get()
            await self._writer.abefore_admission(request.external_id, state, datetime.now(UTC), self.request_timeout)
        return await self._arun(self._admission(request, found, ask_lease=False), deadline=self._left(began))

    def settle(self, settlement: Settlement) -> None:
        """Buffer; this process's writer thread writes the buffer ``linger`` seconds later, in one
        round trip for all it holds (:mod:`.background`), or, with ``writer_thread=False``, this
        thread writes it now. On an outage it stays buffered, is logged, and is retried (at most
        once applied); nothing is raised, so a caller never re-submits it."""
        self._buffer.add(settlement)
        if self._writer_thread:
            self._writer.background.poke()
        else:
            with contextlib.suppress(StoreUnavailable):  # kept buffered, logged once per outage by the buffer
                self._writer.flush(self._request_runner)

    async def asettle(self, settlement: Settlement) -> None:
        """Buffer; this loop writes the buffer on its next tick, in one round trip for all."""
        self._buffer.add(settlement)
        self._writer.schedule(self._loops.cached() or await self._loops.get())  # no coroutine when known

    # -- sessions (``session=``): GET before an instrumented call, INCRBY + EXPIRE as a request settles --
    def _session_key(self, external_id: str, session: str) -> str:
        return self._plans.records.keys.session(identity_tag(external_id), session)

    def session_cost(self, external_id: str, session: str) -> int:
        return self._run(sessions.spent(self._session_key(external_id, session)), runner=self._request_runner)

    async def asession_cost(self, external_id: str, session: str) -> int:
        return await self._arun(sessions.spent(self._session_key(external_id, session)), deadline=self.request_timeout)

    def add_session_cost(self, external_id: str, session: str, cost: int, ttl: int) -> int:
        return self._run(sessions.charge(self._session_key(external_id, session), cost, ttl),
                         runner=self._request_runner)

    async def aadd_session_cost(self, external_id: str, session: str, cost: int, ttl: int) -> int:
        return await self._arun(sessions.charge(self._session_key(external_id, session), cost, ttl),
                                deadline=self.request_timeout)

    # -- budgets (orq's Budgets API; an identity's own budgets) ----------------------------------------
    @property
    def wants_model(self) -> bool:
        return self._plans.registry.wants_model

    @property
    def wants_headers(self) -> bool:
        return self._plans.registry.wants_headers

    def create_budget(self, spec: BudgetSpec) -> ScopedBudget:
        return self._run(self._plans.budgets.create_budget(spec))

    async def acreate_budget(self, spec: BudgetSpec) -> ScopedBudget:
        return await self._arun(self._plans.budgets.create_budget(spec))

    def retrieve_budget(self, budget_id: str) -> ScopedBudget:
        return self._run(self._plans.budgets.retrieve_budget(budget_id))

    async def aretrieve_budget(self, budget_id: str) -> ScopedBudget:
        return await self._arun(self._plans.budgets.retrieve_budget(budget_id))

    def update_budget(self, budget_id: str, changes: BudgetChanges) -> ScopedBudget:
        return self._run(self._plans.budgets.update_budget(budget_id, changes))

    async def aupdate_budget(self, budget_id: str, changes: BudgetChanges) -> ScopedBudget:
        return await self._arun(self._plans.budgets.update_budget(budget_id, changes))

    def delete_budget(self, budget_id: str) -> None:
        self._run(self._plans.budgets.delete_budget(budget_id))

    async def adelete_budget(self, budget_id: str) -> None:
        await self._arun(self._plans.budgets.delete_budget(budget_id))

    def list_budgets(self, limit: int = 10, starting_after: str | None = None, ending_before: str | None = None,
                     scope_kinds: Sequence[str] | None = None, target: str | None = None,
                     is_active: bool | None = None, periods: Sequence[str] | None = None,
                     query: str | None = None, *, order: BudgetOrder | str = BudgetOrder.ID) -> ScopedBudgetPage:
        plan = self._plans.budgets.list_budgets(limit, starting_after, ending_before, scope_kinds, target, is_active,
                                                periods, query, BudgetOrder(order))
        return self._run(plan, flush_first=True)

    async def alist_budgets(self, limit: int = 10, starting_after: str | None = None,
                            ending_before: str | None = None, scope_kinds: Sequence[str] | None = None,
                            target: str | None = None, is_active: bool | None = None,
                            periods: Sequence[str] | None = None, query: str | None = None, *,
                            order: BudgetOrder | str = BudgetOrder.ID) -> ScopedBudgetPage:
        plan = self._plans.budgets.list_budgets(limit, starting_after, ending_before, scope_kinds, target, is_active,
                                                periods, query, BudgetOrder(order))
        return await self._arun(plan, flush_first=True)

    def budget_usage(self, budget_id: str, *, now: datetime | None = None) -> BudgetUsage:
        return self._run(self._plans.budgets.budget_usage(budget_id, now), flush_first=True)

    async def abudget_usage(self, budget_id: str, *, now: datetime | None = None) -> BudgetUsage:
        return await self._arun(self._plans.budgets.budget_usage(budget_id, now), flush_first=True)

    def check_request(self, request: CheckRequest) -> BudgetCheck:
        return self._run(self._plans.globals.check(request, datetime.now(UTC)), flush_first=True)

    async def acheck_request(self, request: CheckRequest) -> BudgetCheck:
        return await self._arun(self._plans.globals.check(request, datetime.now(UTC)), flush_first=True)

    def reset_budget_consumption(self, budget_id: str) -> None:
        self._run(self._plans.budgets.reset_budget_consumption(budget_id), flush_first=True)

    async def areset_budget_consumption(self, budget_id: str) -> None:
        await self._arun(self._plans.budgets.reset_budget_consumption(budget_id), flush_first=True)

    def top_up(self, budget_id: str, amount: Money, idempotency_key: str, *, now: datetime | None = None) -> TopUp:
        return self._run(self._plans.credits.top_up(budget_id, amount, idempotency_key, now))

    async def atop_up(self, budget_id: str, amount: Money, idempotency_key: str, *,
                      now: datetime | None = None) -> TopUp:
        return await self._arun(self._plans.credits.top_up(budget_id, amount, idempotency_key, now))

    def top_ups(self, budget_id: str) -> builtins.list[TopUp]:
        return self._run(self._plans.credits.top_ups(budget_id))

    async def atop_ups(self, budget_id: str) -> builtins.list[TopUp]:
        return await self._arun(self._plans.credits.top_ups(budget_id))

    # -- an identity's own budgets (the identity routes) --------------------------------------------
    def set_budget(self, identity_id: str, budget: Budget) -> None:
        self._run(self._plans.budgets.set_budget(identity_id, budget))

    async def aset_budget(self, identity_id: str, budget: Budget) -> None:
        await self._arun(self._plans.budgets.set_budget(identity_id, budget))

    def remove_budget(self, identity_id: str, period: Period | str) -> None:
        self._run(self._plans.budgets.remove_budget(identity_id, period))

    async def aremove_budget(self, identity_id: str, period: Period | str) -> None:
        await self._arun(self._plans.budgets.remove_budget(identity_id, period))

    def budget_status(self, identity_id: str, *, now: datetime | None = None) -> builtins.list[BudgetStatus]:
        return self._run(self._plans.budgets.budget_status(identity_id, now), flush_first=True)

    async def abudget_status(self, identity_id: str, *, now: datetime | None = None) -> builtins.list[BudgetStatus]:
        return await self._arun(self._plans.budgets.budget_status(identity_id, now), flush_first=True)

    def reset_budget(self, identity_id: str, period: Period | str) -> None:
        self._run(self._plans.budgets.reset_budget(identity_id, period), flush_first=True)

    async def areset_budget(self, identity_id: str, period: Period | str) -> None:
        await self._arun(self._plans.budgets.reset_budget(identity_id, period), flush_first=True)


def _given(client: SyncClient | None) -> RedisPy:
    """The transport over the sync client passed in; a store given only an async factory has none."""
    if client is None:
        raise StoreMisconfigured("this RedisStore was given only async_client_factory=, and a sync operation "
                                 "(a WSGI or Django request, the CLI, a sync method) needs client=redis.Redis(...)")
    return RedisPy(client)
