"""RedisStore: the shared store (standalone, Sentinel, Cluster), one object for threads and event loops.

Both forms drive the sans-IO plans of :mod:`.plans`; this module only runs their steps on a
client. Sync methods use one thread-safe sync client (a ``BlockingConnectionPool``: under load a
caller waits for a connection instead of failing); async twins use one async client per running
event loop, made on first use in that loop and closed when the loop shuts down.

Settlements are batched. ``settle``/``asettle`` put the settlement in a process-wide buffer and a
flush writes everything buffered in one pipelined round trip (one script call per identity: its
settlements' usage summed, all their reservations released). The async form returns at once and
the flush runs on the next loop tick, so concurrent requests share one round trip; the reservation
stays held in Redis until its settle applies, so ``spent + reserved <= amount`` holds throughout.
Reads that could see buffered usage (metrics, budget status, list, reset, delete) flush first, so a
caller sees its own writes.

The async hot path on a plain standalone server (``redis://``, hiredis installed, no extra client
options) sends script calls (admission, settlement flushes, status reads) over one multiplexed
connection per loop (:class:`_Mux`): calls of one tick share a write and replies complete futures
in order. Everything else, and Cluster, Sentinel, TLS or injected clients, use redis-py.

Outages: connection and timeout errors become :class:`StoreUnavailable`. A settlement that cannot be
written stays buffered (at most ``pending_limit``, default 100,000; beyond that the oldest are
dropped and logged) and is retried after the next successful call and on ``flush``/``close``.
If a connection breaks after a pipeline was sent, Redis may have applied it; the batch is retried
anyway (usage is never dropped), so such a cut can count a batch twice.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import concurrent.futures
import contextlib
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any, TypeVar

import redis
import redis.asyncio.cluster
import redis.exceptions

from ...core.admission import Admission, AdmissionRequest, Settlement
from ...core.errors import StoreUnavailable
from ...core.models import Budget, BudgetStatus, Identity, IdentityInput, IdentityPage, Metrics
from ...core.periods import UTC, Period
from ..base import DEFAULT_RESERVATION_TTL, Store
from .clients import AsyncClient, ClientSpec, SyncClient
from .mux import Direct, Landed, pack, pack_eval
from .plans import Batch, Call, Eval, Plan, Plans, Step
from .scripts import Script

T = TypeVar("T")
logger = logging.getLogger("identity_middleware.stores.redis")

_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.ClusterDownError,
         redis.exceptions.MaxConnectionsError, OSError)
_FLUSH_BATCH = 500
_INFLIGHT_WAIT = 10.0  # seconds a read waits for other flushes' batches to land


def _no_script(error: object) -> bool:
    return isinstance(error, redis.exceptions.NoScriptError)


def _first_error(results: Sequence[Any]) -> None:
    for result in results:
        if isinstance(result, Exception):
            raise result


@dataclass(eq=False)
class _Loop:
    """One event loop's async client, connection gate and flush task."""

    client: AsyncClient
    limiter: asyncio.Semaphore | None
    flush_task: asyncio.Task[None] | None = None
    guard: Any = None
    closed: bool = False
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    direct: Direct | None = None


class RedisStore(Store):
    """Identities, budgets and metrics in Redis, shared by every app instance (see module docs)."""

    settles_before_await = True  # asettle buffers before it awaits anything

    def __init__(
        self,
        spec: ClientSpec | None = None,
        *,
        client: SyncClient | None = None,
        async_client_factory: Any = None,
        prefix: str = "idm",
        tz: tzinfo = UTC,
        reservation_ttl: float = DEFAULT_RESERVATION_TTL,
        pending_limit: int = 100_000,
    ) -> None:
        if spec is None and (client is None or async_client_factory is None):
            raise ValueError("give a ClientSpec (use RedisStore.from_url) or both client and async_client_factory")
        self.tz = tz
        self.reservation_ttl = reservation_ttl
        self._spec = spec
        self._plans = Plans(prefix, tz, reservation_ttl)
        self._given_client = client
        self._async_factory = async_client_factory
        self._sync: SyncClient | None = client
        self._sync_lock = threading.Lock()
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Loop] = weakref.WeakKeyDictionary()
        self._loops_lock = threading.Lock()
        self._loop_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary())
        self._pending: collections.deque[Settlement] = collections.deque()
        self._inflight: set[concurrent.futures.Future[None]] = set()
        self._inflight_lock = threading.Lock()
        # The loop _loop() answered last, and its state: most calls come from the same loop.
        self._last: tuple[weakref.ref[asyncio.AbstractEventLoop], _Loop] | None = None
        self._pending_limit = pending_limit
        self._retry_due = False
        self._outage = False

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
        **client_options: Any,
    ) -> RedisStore:
        """``redis://``, ``rediss://``, ``redis+sentinel://host:port/service``, ``redis+cluster://host:port``.

        ``max_connections`` caps each pool (per node on a Cluster); callers beyond it wait up to
        ``pool_timeout`` seconds. Other keyword arguments go to the redis-py clients.
        """
        spec = ClientSpec(url, max_connections, pool_timeout, socket_timeout, socket_connect_timeout,
                          tuple(client_options.items()))
        return cls(spec, prefix=prefix, tz=tz, reservation_ttl=reservation_ttl, pending_limit=pending_limit)

    @property
    def prefix(self) -> str:
        return self._plans.keys.prefix

    @property
    def rate_limit_storage_uri(self) -> str:
        if self._spec is None:
            raise RuntimeError("a RedisStore built from clients does not know its URL")
        return self._spec.rate_limit_storage_uri

    # -- running plans, sync ---------------------------------------------------------------------
    def _client(self) -> SyncClient:
        if self._sync is None:
            with self._sync_lock:
                if self._sync is None:
                    assert self._spec is not None
                    self._sync = self._spec.sync_client()
        return self._sync

    def _eval(self, client: Any, step: Eval) -> Any:
        try:
            return client.evalsha(step.script.sha, len(step.keys), *step.keys, *step.args)
        except redis.exceptions.NoScriptError:
            client.script_load(step.script.source)  # all primaries on a Cluster
            return client.evalsha(step.script.sha, len(step.keys), *step.keys, *step.args)

    def _batch(self, client: Any, steps: Sequence[Call | Eval]) -> builtins.list[Any]:
        results = [None] * len(steps)
        todo = list(range(len(steps)))
        for attempt in range(2):
            pipe = client.pipeline(transaction=False)
            for index in todo:
                _queue(pipe, steps[index])
            for index, result in zip(todo, pipe.execute(raise_on_error=False), strict=True):
                results[index] = result
            todo = [index for index in todo if _no_script(results[index])]
            if not todo or attempt:
                break
            for script in _scripts(steps, todo):
                client.script_load(script.source)
        _first_error(results)
        return results

    def _step(self, client: Any, step: Step) -> Any:
        if isinstance(step, Call):
            return getattr(client, step.method)(*step.args)
        if isinstance(step, Eval):
            return self._eval(client, step)
        return self._batch(client, step.steps)

    def _exec(self, plan: Plan[T]) -> T:
        try:
            step = next(plan)
            client = self._client()
            while True:
                step = plan.send(self._step(client, step))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        except _DOWN as error:
            raise StoreUnavailable(f"redis: {error}") from error

    def _run(self, plan: Plan[T], *, flush_first: bool = False) -> T:
        if flush_first and self._pending:
            self._drain()
        result = self._exec(plan)
        if self._retry_due and self._pending:
            with contextlib.suppress(StoreUnavailable):
                self._drain()
        return result

    # -- running plans, async (one client per loop) ----------------------------------------------
    async def _loop(self) -> _Loop:
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0]() is loop and not last[1].closed:
            return last[1]
        state = self._loops.get(loop)
        if state is not None and not state.closed:
            self._last = (weakref.ref(loop), state)
            return state
        # One coroutine per loop builds the client: a Cluster client is initialised (awaited)
        # before it is registered, and without this gate every request arriving meanwhile built
        # and initialised its own client (hundreds of connections at once, and leaked clients).
        with self._loops_lock:
            gate = self._loop_gates.get(loop)
            if gate is None:
                gate = self._loop_gates[loop] = asyncio.Lock()
        async with gate:
            state = self._loops.get(loop)
            if state is not None and not state.closed:
                return state
            return await self._new_loop(loop)

    async def _new_loop(self, loop: asyncio.AbstractEventLoop) -> _Loop:
        if self._async_factory is not None:
            client = self._async_factory()
        else:
            assert self._spec is not None
            client = self._spec.async_client()
        state = _Loop(client, self._spec.limiter() if self._spec is not None else None)
        if (self._async_factory is None and self._spec is not None and not self._spec.is_cluster
                and not self._spec.is_sentinel and type(client) is redis.asyncio.Redis
                and Direct.usable(client.connection_pool)):
            state.direct = Direct(client.connection_pool)
        if isinstance(client, redis.asyncio.cluster.RedisCluster):
            # Learn the slot map once, before many coroutines race to (redis-py then opens and
            # uses half-set-up connections concurrently under load).
            try:
                await client.initialize()
            except BaseException as error:
                with contextlib.suppress(Exception):
                    await client.aclose()
                if isinstance(error, _DOWN):
                    raise StoreUnavailable(f"redis: {error}") from error
                raise
        with self._loops_lock:
            self._loops[loop] = state
        # An async generator the loop finalises at shutdown (asyncio.run / anyio.run call
        # shutdown_asyncgens): that is where this loop's buffered settlements are written and its
        # connections closed, so a loop that ends leaks nothing.
        state.guard = self._loop_guard(state)
        await state.guard.__anext__()
        return state

    async def _loop_guard(self, state: _Loop) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await self._retire(state)

    async def _retire(self, state: _Loop) -> None:
        if state.closed:
            return
        try:
            if self._pending:
                await self._adrain(state)
        except StoreUnavailable:
            logger.warning("redis unavailable at loop shutdown; %d settlements stay buffered", len(self._pending))
        finally:
            state.closed = True
            if state.direct is not None:
                await state.direct.release()
            await state.client.aclose()

    async def _aeval(self, client: Any, step: Eval) -> Any:
        try:
            return await client.evalsha(step.script.sha, len(step.keys), *step.keys, *step.args)
        except redis.exceptions.NoScriptError:
            await client.script_load(step.script.source)
            return await client.evalsha(step.script.sha, len(step.keys), *step.keys, *step.args)

    async def _direct_eval(self, direct: Direct, step: Eval) -> Any:
        packed = pack_eval(step)
        try:
            return await direct.call(packed)
        except redis.exceptions.NoScriptError:
            await direct.call(pack(("SCRIPT", "LOAD", step.script.source)))
            return await direct.call(packed)

    async def _direct_batch(self, direct: Direct, steps: Sequence[Eval]) -> builtins.list[Any]:
        packed = [pack_eval(step) for step in steps]
        results = await direct.call_many(packed)
        todo = [index for index, result in enumerate(results) if _no_script(result)]
        if todo:
            for script in _scripts(steps, todo):
                await direct.call(pack(("SCRIPT", "LOAD", script.source)))
            for index, result in zip(todo, await direct.call_many([packed[i] for i in todo]), strict=True):
                results[index] = result
        _first_error(results)
        return results

    async def _abatch(self, client: Any, steps: Sequence[Call | Eval]) -> builtins.list[Any]:
        results = [None] * len(steps)
        todo = list(range(len(steps)))
        for attempt in range(2):
            pipe = client.pipeline(transaction=False)
            for index in todo:
                _queue(pipe, steps[index])
            for index, result in zip(todo, await pipe.execute(raise_on_error=False), strict=True):
                results[index] = result
            todo = [index for index in todo if _no_script(results[index])]
            if not todo or attempt:
                break
            for script in _scripts(steps, todo):
                await client.script_load(script.source)
        _first_error(results)
        return results

    async def _astep(self, state: _Loop, step: Step) -> Any:
        if state.direct is not None:
            if isinstance(step, Eval):
                return await self._direct_eval(state.direct, step)
            if isinstance(step, Batch) and all(isinstance(each, Eval) for each in step.steps):
                return await self._direct_batch(state.direct, step.steps)  # type: ignore[arg-type]
        if state.limiter is not None:
            async with state.limiter:
                return await self._astep_now(state.client, step)
        return await self._astep_now(state.client, step)

    async def _astep_now(self, client: Any, step: Step) -> Any:
        if isinstance(step, Call):
            return await getattr(client, step.method)(*step.args)
        if isinstance(step, Eval):
            return await self._aeval(client, step)
        return await self._abatch(client, step.steps)

    async def _aexec(self, state: _Loop, plan: Plan[T]) -> T:
        try:
            step = next(plan)
            while True:
                step = plan.send(await self._astep(state, step))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        except _DOWN as error:
            raise StoreUnavailable(f"redis: {error}") from error

    async def _arun(self, plan: Plan[T], *, flush_first: bool = False) -> T:
        state = await self._loop()
        if flush_first and (self._pending or (state.flush_task is not None and not state.flush_task.done())):
            await self._aflush_loop(state)
        try:
            result = await self._aexec(state, plan)
        except Landed:  # a read cancelled after its batch was answered: cancelled all the same
            raise asyncio.CancelledError from None
        if self._retry_due and self._pending:
            self._schedule_flush(state)
        return result

    # -- the settlement buffer -------------------------------------------------------------------
    def _enqueue(self, settlement: Settlement) -> None:
        if settlement.now is None:
            # Stamped now, so a flush after midnight still charges the day the request ended.
            settlement = Settlement(settlement.identity_id, settlement.usage, settlement.reservation,
                                    datetime.now(UTC))
        self._pending.append(settlement)
        while len(self._pending) > self._pending_limit:
            lost = self._pending.popleft()
            logger.error("settlement buffer full (%d): dropped the usage of %s (cost %d nano-USD)",
                         self._pending_limit, lost.identity_id, lost.usage.cost)

    def _take(self) -> tuple[builtins.list[Settlement], concurrent.futures.Future[None]]:
        """Up to a batch of buffered settlements, and a marker that is done once their write is
        over: a read in another loop that flushes first waits for batches other flushes hold."""
        batch: builtins.list[Settlement] = []
        marker: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._inflight_lock:
            try:
                while len(batch) < _FLUSH_BATCH:
                    batch.append(self._pending.popleft())
            except IndexError:
                pass
            if batch:
                self._inflight.add(marker)
        return batch, marker

    def _taken(self, marker: concurrent.futures.Future[None]) -> None:
        with self._inflight_lock:
            self._inflight.discard(marker)
        marker.set_result(None)

    async def _others_written(self) -> None:
        """Wait for the batches other flushes (threads, loops) took before this read."""
        with self._inflight_lock:
            pending = builtins.list(self._inflight)
        if not pending:
            return
        _, late = await asyncio.wait([asyncio.wrap_future(marker) for marker in pending], timeout=_INFLIGHT_WAIT)
        if late:  # a loop that stopped mid-write never ends its batch: not waited for again
            with self._inflight_lock:
                self._inflight.difference_update(marker for marker in pending if not marker.done())

    def _requeue(self, batch: builtins.list[Settlement]) -> None:
        self._pending.extendleft(reversed(batch))
        self._retry_due = True
        if not self._outage:
            self._outage = True
            logger.warning("redis unavailable: %d settlements buffered, retried when it answers", len(self._pending))

    def _recovered(self) -> None:
        if self._outage and not self._pending:
            self._outage = False
            self._retry_due = False
            logger.warning("redis answers again: buffered settlements written")

    def _drain(self) -> None:
        while True:
            batch, marker = self._take()
            if not batch:
                break
            try:
                self._exec(self._plans.settle(batch))
            except StoreUnavailable:
                self._requeue(batch)
                raise
            except Exception:
                _poisoned(batch)
                raise
            finally:
                self._taken(marker)
        self._recovered()

    async def _adrain(self, state: _Loop) -> None:
        while True:
            batch, marker = self._take()
            if not batch:
                break
            try:
                await self._write_batch(state, batch)
            finally:
                self._taken(marker)
        self._recovered()

    async def _write_batch(self, state: _Loop, batch: builtins.list[Settlement]) -> None:
        try:
            await self._aexec(state, self._plans.settle(batch))
        except Landed:
            # Cancelled (e.g. the loop shutting down) after the batch was written and applied:
            # not re-buffered, so it is not counted twice.
            raise asyncio.CancelledError from None
        except (StoreUnavailable, asyncio.CancelledError):
            # Cancellation included: re-buffered rather than lost (see the module docs).
            self._requeue(batch)
            raise
        except Exception:
            _poisoned(batch)
            raise

    def _schedule_flush(self, state: _Loop) -> None:
        if state.flush_task is None or state.flush_task.done():
            state.flush_task = asyncio.get_running_loop().create_task(self._background_flush(state))

    async def _background_flush(self, state: _Loop) -> None:
        with contextlib.suppress(StoreUnavailable):  # buffered, logged once per outage by _requeue
            await self._adrain(state)

    async def _aflush_loop(self, state: _Loop) -> None:
        task = state.flush_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            await asyncio.wait([task])
        await self._adrain(state)
        await self._others_written()

    # -- life ------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Write every buffered settlement (raises :class:`StoreUnavailable`; they stay buffered)."""
        self._drain()

    async def aflush(self) -> None:
        await self._aflush_loop(await self._loop())

    def close(self) -> None:
        """Flush, then release the sync client's connections (a client passed in is left open)."""
        try:
            if self._pending:
                self.flush()
        finally:
            if self._sync is not None and self._given_client is None:
                self._sync.close()
                self._sync = None

    async def aclose(self) -> None:
        """Flush and close this loop's async client (and the sync one)."""
        state = await self._loop()
        try:
            await self._aflush_loop(state)
        finally:
            await state.guard.aclose()
            loop = asyncio.get_running_loop()
            with self._loops_lock:
                if self._loops.get(loop) is state:
                    del self._loops[loop]
            if self._sync is not None and self._given_client is None:
                self._sync.close()
                self._sync = None

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

    def list(
        self,
        limit: int = 10,
        starting_after: str | None = None,
        ending_before: str | None = None,
        search: str | None = None,
        tags: Sequence[str] | None = None,
        include_metrics: bool = False,
        include_budgets: bool = False,
    ) -> IdentityPage:
        plan = self._plans.list(limit, starting_after, ending_before, search, tags, include_metrics, include_budgets)
        return self._run(plan, flush_first=True)

    async def alist(
        self,
        limit: int = 10,
        starting_after: str | None = None,
        ending_before: str | None = None,
        search: str | None = None,
        tags: Sequence[str] | None = None,
        include_metrics: bool = False,
        include_budgets: bool = False,
    ) -> IdentityPage:
        plan = self._plans.list(limit, starting_after, ending_before, search, tags, include_metrics, include_budgets)
        return await self._arun(plan, flush_first=True)

    # -- budgets ---------------------------------------------------------------------------------
    def set_budget(self, identity_id: str, budget: Budget) -> None:
        self._run(self._plans.set_budget(identity_id, budget))

    async def aset_budget(self, identity_id: str, budget: Budget) -> None:
        await self._arun(self._plans.set_budget(identity_id, budget))

    def remove_budget(self, identity_id: str, period: Period | str) -> None:
        self._run(self._plans.remove_budget(identity_id, period))

    async def aremove_budget(self, identity_id: str, period: Period | str) -> None:
        await self._arun(self._plans.remove_budget(identity_id, period))

    def budget_status(self, identity_id: str, *, now: datetime | None = None) -> builtins.list[BudgetStatus]:
        return self._run(self._plans.budget_status(identity_id, now), flush_first=True)

    async def abudget_status(self, identity_id: str, *, now: datetime | None = None) -> builtins.list[BudgetStatus]:
        return await self._arun(self._plans.budget_status(identity_id, now), flush_first=True)

    def reset_budget(self, identity_id: str, period: Period | str) -> None:
        self._run(self._plans.reset_budget(identity_id, period), flush_first=True)

    async def areset_budget(self, identity_id: str, period: Period | str) -> None:
        await self._arun(self._plans.reset_budget(identity_id, period), flush_first=True)

    # -- usage -----------------------------------------------------------------------------------
    def metrics(self, identity_id: str, *, now: datetime | None = None) -> Metrics:
        return self._run(self._plans.metrics(identity_id, now), flush_first=True)

    async def ametrics(self, identity_id: str, *, now: datetime | None = None) -> Metrics:
        return await self._arun(self._plans.metrics(identity_id, now), flush_first=True)

    # -- the request path ------------------------------------------------------------------------
    def admit(self, request: AdmissionRequest) -> Admission:
        return self._run(self._plans.admit(request))

    async def aadmit(self, request: AdmissionRequest) -> Admission:
        return await self._arun(self._plans.admit(request))

    def settle(self, settlement: Settlement) -> None:
        """Buffer and write at once (with anything else buffered). On an outage it stays buffered,
        is logged, and is retried later; it is not raised, so a caller never re-submits it."""
        self._enqueue(settlement)
        with contextlib.suppress(StoreUnavailable):
            self._drain()

    async def asettle(self, settlement: Settlement) -> None:
        """Buffer; this loop writes the buffer on its next tick, in one round trip for all."""
        self._enqueue(settlement)
        self._schedule_flush(await self._loop())


def _poisoned(batch: builtins.list[Settlement]) -> None:
    # Not an outage but a reply Redis will give again (e.g. a key of the wrong type): retrying
    # would block every later settlement behind it, so the batch is logged and not kept.
    logger.error("redis refused %d settlements; their usage is not recorded: %r", len(batch), batch)


def _scripts(steps: Sequence[Call | Eval], indexes: builtins.list[int]) -> set[Script]:
    return {step.script for step in (steps[index] for index in indexes) if isinstance(step, Eval)}


def _queue(pipe: Any, step: Call | Eval) -> None:
    if isinstance(step, Call):
        getattr(pipe, step.method)(*step.args)
    else:
        # execute_command, not evalsha: cluster pipelines refuse the named method but route
        # EVALSHA by its keys when given as a raw command.
        pipe.execute_command("EVALSHA", step.script.sha, len(step.keys), *step.keys, *step.args)
