"""One async client per running event loop: built once under a gate, flushed and closed with its loop.

redis.asyncio connections belong to the loop that opened them, and one store serves many loops over
its life (a test client's, then ``anyio.run``'s, ...). Each loop gets its own client on first use;
an async generator the loop finalises at shutdown (``asyncio.run`` and ``anyio.run`` call
``shutdown_asyncgens``) hands the loop's client back: buffered settlements written, connections
closed, so a loop that ends leaks nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass

import redis.asyncio.cluster

from ...core.errors import StoreMisconfigured
from .clients import AsyncClient, ClientSpec
from .transport import AsyncRedisPy, AsyncTransport, down, unavailable


@dataclass(eq=False)
class LoopClient:
    """One event loop's async client, the transport over it, and its flush task."""

    client: AsyncClient
    transport: AsyncTransport
    flush_task: asyncio.Task[None] | None = None
    guard: AsyncGenerator[None, None] | None = None
    closed: bool = False


class Loops:
    """The :class:`LoopClient` of each running loop; ``retire`` runs before a loop's client closes."""

    def __init__(self, spec: ClientSpec | None, factory: Callable[[], AsyncClient] | None,
                 retire: Callable[[LoopClient], Awaitable[None]]) -> None:
        self._spec = spec
        self._factory = factory
        self._retire = retire
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopClient] = weakref.WeakKeyDictionary()
        self._gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        # The loop get() answered last, and its state: most calls come from the same loop.
        self._last: tuple[weakref.ref[asyncio.AbstractEventLoop], LoopClient] | None = None

    def cached(self) -> LoopClient | None:
        """The running loop's client if :meth:`get` answered it last (no await: the request path)."""
        last = self._last
        if last is not None and last[0]() is asyncio.get_running_loop() and not last[1].closed:
            return last[1]
        return None

    async def get(self) -> LoopClient:
        found = self.cached()
        if found is not None:
            return found
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is not None and not state.closed:
            self._last = (weakref.ref(loop), state)
            return state
        # One coroutine per loop builds the client: a Cluster client is initialised (awaited)
        # before it is registered, and without this gate every request arriving meanwhile built
        # and initialised its own client (hundreds of connections at once, and leaked clients).
        with self._lock:
            gate = self._gates.get(loop)
            if gate is None:
                gate = self._gates[loop] = asyncio.Lock()
        async with gate:
            state = self._states.get(loop)
            if state is not None and not state.closed:
                return state
            return await self._new(loop)

    async def _new(self, loop: asyncio.AbstractEventLoop) -> LoopClient:
        spec = self._spec
        transport: AsyncTransport
        if self._factory is not None:
            client = self._factory()
            transport = AsyncRedisPy(client)
        elif spec is None:
            raise StoreMisconfigured("this RedisStore was given only client=, and an async operation (an ASGI request, "
                                     "an async method) needs async_client_factory=lambda: redis.asyncio.Redis(...)")
        else:
            client = spec.async_client()
            transport = AsyncRedisPy(client, spec.limiter(), spec.clock)
            if spec.multiplexed and isinstance(client, redis.asyncio.Redis):
                from .accelerated.mux import MuxTransport  # loaded only when on

                transport = MuxTransport(transport)
        state = LoopClient(client, transport)
        if isinstance(state.client, redis.asyncio.cluster.RedisCluster):
            # Learn the slot map once, before many coroutines race to (redis-py then opens and
            # uses half-set-up connections concurrently under load).
            try:
                await state.client.initialize()
            except BaseException as error:
                with contextlib.suppress(Exception):
                    await state.client.aclose()
                if down(error):
                    raise unavailable(error) from error
                raise
        with self._lock:
            self._states[loop] = state
        state.guard = self._guard(state)
        await state.guard.__anext__()
        return state

    async def _guard(self, state: LoopClient) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            await self._close(state)

    async def _close(self, state: LoopClient) -> None:
        if state.closed:
            return
        try:
            await self._retire(state)
        finally:
            state.closed = True
            await state.transport.aclose()

    async def close(self, state: LoopClient) -> None:
        """Retire and close the running loop's client now (it is rebuilt if the loop calls again)."""
        if state.guard is not None:
            await state.guard.aclose()
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._states.get(loop) is state:
                del self._states[loop]
