"""The multiplexed async transport: one connection per event loop for a plain standalone Redis.

Calls made in the same loop tick go out in one write and their replies (RESP is FIFO) complete
their futures in order, parsed by hiredis: no pool condition, readiness probe, per-call timeout
contexts or per-argument encoder on the hot path. ``bench/redis_mux.py`` measures what that gains
over redis-py. :class:`MuxTransport` sends script calls and ``HGETALL`` this way and everything else
through redis-py's transport (:class:`..transport.AsyncRedisPy`). Only public APIs:
``hiredis.Reader``, redis-py's exception classes and its pool's ``connection_kwargs``.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import math
from collections.abc import Sequence
from typing import Any

import hiredis
import redis.exceptions as errors

from ..steps import Batch, Step
from ..transport import AsyncRedisPy, Landed
from .resp import LOAD_SCRIPTS, SCRIPT_COUNT, Endpoint, direct_command, reply_error

__all__ = ["Connection", "Direct", "MuxTransport"]

_NEVER = math.inf


class Connection(asyncio.Protocol):
    """One connection carrying every script call of a loop: calls made in the same tick go out in
    one write, replies come back in order (RESP is FIFO) and complete their futures."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> None:
        self.loop = loop
        self.timeout = timeout
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(encoding="utf-8", replyError=reply_error)
        # Calls awaiting their reply, in order, with their socket deadlines and their own deadlines
        # (loop time), side by side: floats are no objects for the garbage collector to track.
        self.waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        # What each call sent, to send again once after a NOSCRIPT reply (b"": sent again already).
        self.sent: collections.deque[bytes] = collections.deque()
        self.socket_deadlines: collections.deque[float] = collections.deque()
        self.deadlines: collections.deque[float] = collections.deque()
        self.out: builtins.list[bytes] = []
        self.failure: BaseException | None = None
        self.watchdog: asyncio.TimerHandle | None = None
        # One timer for the calls' own deadlines (admissions: request_timeout), at the soonest
        # pending one, instead of a timeout context per call.
        self.expiry: asyncio.TimerHandle | None = None
        # When that timer fires (loop time): kept here, since uvloop's handle of a timer due within
        # about a millisecond is a plain Handle without ``when()``.
        self.expiry_at = _NEVER

    @property
    def alive(self) -> bool:
        return self.failure is None and self.transport is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        waiters = self.waiters
        while (reply := reader.gets()) is not False:
            if not waiters:
                self._fail(errors.ConnectionError("redis sent a reply nobody asked for"))
                return
            future = waiters.popleft()
            sent = self.sent.popleft()
            self.socket_deadlines.popleft()
            deadline = self.deadlines.popleft()
            if future.done():
                continue  # its caller was cancelled
            if isinstance(reply, errors.NoScriptError) and sent:
                self._reload(future, sent, deadline)  # Redis forgot the scripts: loaded, then sent again
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def _reload(self, future: asyncio.Future[Any], sent: bytes, deadline: float) -> None:
        for _ in range(SCRIPT_COUNT):
            self._queue(self.loop.create_future(), b"", _NEVER)
        self.out.append(LOAD_SCRIPTS)
        self._queue(future, b"", deadline)
        self.out.append(sent)
        self._write()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(errors.ConnectionError(f"connection to redis lost: {exc or 'closed by server'}"))

    def _fail(self, error: BaseException) -> None:
        if self.failure is None:
            self.failure = error
        for timer in (self.watchdog, self.expiry):
            if timer is not None:
                timer.cancel()
        self.watchdog = self.expiry = None
        if self.transport is not None:
            self.transport.abort()
        waiters, self.waiters = self.waiters, collections.deque()
        self.sent.clear()
        self.socket_deadlines.clear()
        self.deadlines.clear()
        for future in waiters:
            if not future.done():
                future.set_exception(error)

    def _write(self) -> None:
        out, self.out = self.out, []
        if self.transport is not None and self.failure is None:
            self.transport.write(b"".join(out))

    def _check(self) -> None:
        self.watchdog = None
        if not self.waiters or self.timeout is None:
            return
        deadline = self.socket_deadlines[0]
        if deadline <= self.loop.time():
            self._fail(errors.TimeoutError("Timeout reading from redis"))
        else:
            self.watchdog = self.loop.call_at(deadline, self._check)

    def _expire(self) -> None:
        """Fail the calls whose own deadline passed (their late replies are read and dropped), and
        wait for the soonest of the others. The waiters are the calls in flight, so this looks at a
        few dozen at most, about once per deadline's length."""
        self.expiry = None
        now = self.loop.time()
        soonest = _NEVER
        for future, deadline in zip(self.waiters, self.deadlines, strict=True):
            if deadline <= now:
                if not future.done():
                    future.set_exception(errors.TimeoutError("no reply from redis within the request timeout"))
            elif deadline < soonest and not future.done():
                soonest = deadline
        if soonest < _NEVER:
            self.expiry = self.loop.call_at(soonest, self._expire)
            self.expiry_at = soonest

    def call(self, packed: bytes, deadline: float | None = None) -> asyncio.Future[Any]:
        """The reply of one command; ``deadline`` (loop time) fails this call alone when it passes."""
        future: asyncio.Future[Any] = self.loop.create_future()
        if self.failure is not None:
            future.set_exception(self.failure)
            return future
        if deadline is None:
            deadline = _NEVER
        elif self.expiry is None or deadline < self.expiry_at:
            if self.expiry is not None:
                self.expiry.cancel()
            self.expiry = self.loop.call_at(deadline, self._expire)
            self.expiry_at = deadline
        if not self.out:
            self.loop.call_soon(self._write)
        self.out.append(packed)
        self._queue(future, packed, deadline)
        return future

    def _queue(self, future: asyncio.Future[Any], packed: bytes, deadline: float) -> None:
        """Await the reply of a command written (or about to be) after every one before it."""
        self.waiters.append(future)
        self.sent.append(packed)
        self.deadlines.append(deadline)
        if self.timeout is None:
            self.socket_deadlines.append(0.0)
        else:
            self.socket_deadlines.append(self.loop.time() + self.timeout)
            if self.watchdog is None:
                self.watchdog = self.loop.call_later(self.timeout, self._check)

    def close(self) -> None:
        self._fail(errors.ConnectionError("closed"))


class Direct:
    """Script calls of one loop on a plain standalone server, over one multiplexed connection
    (:class:`Connection`) instead of a pooled connection per call: no pool condition, readiness probe,
    per-call read/write timeout contexts or per-argument encoder. The redis-py rules are kept: the
    socket timeout bounds every reply (a late one fails the connection and every call on it with
    ``TimeoutError``); a broken connection is retried once, at once, on a new one; a timeout never."""

    def __init__(self, pool: Any) -> None:
        # The pool redis-py built from the same URL: its parameters are the ones to connect with,
        # and its idle connections are dropped when this connection finds the server restarted.
        self.pool = pool
        self.endpoint = Endpoint.of(pool)
        self.mux: Connection | None = None
        self.gate = asyncio.Lock()
        self.closed = False

    async def _connect(self) -> Connection:
        async with self.gate:
            mux = self.mux
            if mux is not None and mux.alive:
                return mux
            if self.closed:
                raise errors.ConnectionError("closed")
            loop = asyncio.get_running_loop()
            end = self.endpoint
            mux = Connection(loop, end.timeout)
            connect = (loop.create_unix_connection(lambda: mux, end.path) if end.path is not None
                       else loop.create_connection(lambda: mux, end.host, end.port))
            try:
                await asyncio.wait_for(connect, end.connect_timeout)
            except (TimeoutError, OSError) as error:
                where = end.path if end.path is not None else f"{end.host}:{end.port}"
                raise errors.ConnectionError(f"Error connecting to {where}: {error!r}") from error
            try:
                for command in end.hello():
                    await mux.call(command)
            except BaseException:
                mux.close()
                raise
            if self.mux is not None:
                # The last connection broke (e.g. a server restart): the pool's idle connections
                # went the same way, so they are closed too and reconnect on their next use.
                await self.pool.disconnect(inuse_connections=False)
            self.mux = mux
            return mux

    async def _connected(self, deadline: float | None) -> Connection:
        """The live connection, connecting first if needed (by ``deadline``, loop time, if given)."""
        mux = self.mux
        if mux is not None and mux.alive:
            return mux
        if deadline is None:
            return await self._connect()
        try:
            return await asyncio.wait_for(self._connect(), max(0.0, deadline - asyncio.get_running_loop().time()))
        except TimeoutError:
            raise errors.TimeoutError("no connection to redis in time") from None

    async def call(self, packed: bytes, deadline: float | None = None) -> Any:
        """One command's reply; past ``deadline`` (loop time) a ``TimeoutError``, the connection kept."""
        mux = await self._connected(deadline)
        try:
            return await mux.call(packed, deadline)
        except errors.ConnectionError:
            if self.closed:
                raise
        return await (await self._connected(deadline)).call(packed, deadline)  # one immediate retry

    async def call_many(self, packed: Sequence[bytes], deadline: float | None = None) -> builtins.list[Any]:
        """Several calls in one write; their replies, in order (the first error reply raised once
        all are in). Not retried (some may have run): a broken connection raises, as a failed
        pipeline does."""
        mux = await self._connected(deadline)
        futures = [mux.call(command, deadline) for command in packed]
        results: builtins.list[Any] = []
        down: BaseException | None = None
        for future in futures:
            try:
                results.append(await asyncio.shield(future))
            except asyncio.CancelledError:
                # Written (or about to be): wait for the replies, so a caller cancelled meanwhile
                # learns whether Redis applied them (a flush must not re-buffer applied usage).
                await asyncio.wait(futures)
                if all(not f.cancelled() and f.exception() is None for f in futures):
                    raise Landed from None
                raise
            except errors.ResponseError as error:
                results.append(error)
            except (errors.ConnectionError, errors.TimeoutError) as error:
                down = down or error
                results.append(error)
        if down is not None:
            raise down
        for result in results:
            if isinstance(result, Exception):
                raise result  # as the reference transport raises a batch's first error reply
        return results

    async def release(self) -> None:
        self.closed = True
        if self.mux is not None:
            self.mux.close()
            self.mux = None


class MuxTransport:
    """The async transport of one loop over :class:`Direct`: script calls and ``HGETALL`` (a batch
    of them too) multiplexed, everything else through ``fallback``, redis-py's transport of the
    same loop (whose client :class:`Direct` takes its connection parameters from)."""

    def __init__(self, fallback: AsyncRedisPy) -> None:
        self.fallback = fallback
        self.direct = Direct(fallback.client.connection_pool)

    def aexecute(self, step: Step, deadline: float | None) -> Any:
        # The multiplexed call's own awaitable, with no coroutine of ours in between: every
        # admission's path.
        if not isinstance(step, Batch):
            packed = direct_command(step)
            if packed is not None:
                return self.direct.call(packed, deadline)
        else:
            commands = [direct_command(each) for each in step.steps]
            if None not in commands:
                return self.direct.call_many(commands, deadline)  # type: ignore[arg-type]
        return self._through_redis_py(step, deadline)

    async def _through_redis_py(self, step: Step, deadline: float | None) -> Any:
        return await self.fallback.aexecute(step, deadline)

    async def afollow_master(self) -> None:
        await self.fallback.afollow_master()  # never a Sentinel client: the multiplexed path serves plain URLs

    async def ademoted(self) -> None:
        mux = self.direct.mux
        if mux is not None:
            mux.close()  # the next call connects again (and drops the pool's idle connections)
        await self.fallback.ademoted()

    async def aclose(self) -> None:
        try:
            await self.direct.release()
        finally:
            await self.fallback.aclose()
