"""The transport seam: how a plan's steps reach Redis, and the reference transport, redis-py's public API.

A transport executes one :class:`.steps.Step` and returns its reply (a batch: the list of its
replies), or raises: a ``ResponseError`` (a reply; the plan may handle it) or connection trouble
(:func:`unavailable` turns it into :class:`StoreUnavailable`). The runners (:mod:`.runner`) drive
plans over any transport; the store picks one per client (cf. httpx's ``BaseTransport``).

The reference, :class:`RedisPy` and :class:`AsyncRedisPy`, is redis-py's public API: scripts through
``register_script`` (its ``Script`` reloads one Redis forgot: a restart, ``SCRIPT FLUSH``, a
failover), pipelines for batches, and the client's pools and retries. The accelerated transports
(:mod:`.accelerated`: one multiplexed connection per event loop, a plain socket per thread) speak
the protocol themselves and are loaded only when ``RedisOptions.multiplex`` is on and the URL
allows them.

This module is also the one place that classifies transport errors: :func:`down` (:data:`DOWN`,
and what redis-py's Cluster client raises when it cannot route a command now) is what means
"Redis is not there" (as opposed to a reply Redis would give again), :data:`UNSERVED` the replies
that mean "not now" (NOREPLICAS, READONLY, LOADING, ...: outages too), and :func:`unavailable` is
where the store decides it is unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import redis.asyncio.sentinel
import redis.exceptions
import redis.sentinel

from ...core.errors import StoreUnavailable
from .scripts import Script
from .steps import Batch, Call, Eval, Step

# What means "Redis is not there" (as opposed to a reply Redis will give again). On a Cluster,
# redis-py's client also raises, when it cannot route a command now though it will once the
# Cluster settles: SlotNotCoveredError (no node serves the slot: its master lost and not replaced,
# or the slot being reassigned), RedisClusterUnreachableError (no node answered for the topology),
# ClusterError ("TTL exhausted": redirections went round while slots moved). The first two are not
# RedisErrors (see :func:`down` for their plain base class).
DOWN: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.ClusterError,
    redis.exceptions.SlotNotCoveredError, redis.exceptions.RedisClusterUnreachableError,
    redis.exceptions.MaxConnectionsError, OSError)
# What a runner catches to ask :func:`down`: DOWN, and the Cluster client's plain RedisClusterException.
FAULTS: tuple[type[BaseException], ...] = (*DOWN, redis.exceptions.RedisClusterException)
# The plain RedisClusterException's words for a topology the client could not read whole now (nodes
# mid-failover disagreeing, slots not covered yet, no node reachable when the cause is not a
# connection's); its other uses are mistakes (a command a Cluster cannot route), never outages.
_TOPOLOGY_WORDS = ("not covered", "could not agree", "cannot be connected")


def down(error: BaseException) -> bool:
    """Whether ``error`` (raised by a transport) means Redis, or the part of a Cluster a command
    needs, is not there now: an outage (:func:`unavailable`), not a mistake to raise as it is."""
    if isinstance(error, DOWN):
        return True
    return isinstance(error, redis.exceptions.RedisClusterException) and any(
        words in str(error) for words in _TOPOLOGY_WORDS)


# Error replies that refuse this client, not the plan's command (a password missing or wrong, a
# database number the server does not have): the store cannot work until it is reconfigured. They
# reach a request as an outage (its policy, never a 500); at startup they are said in words.
REFUSALS = ("DB index is out of range", "invalid DB index", "NOAUTH", "WRONGPASS", "unauthenticated",
            "invalid password", "invalid username-password", "HELLO must be called", "without any password")


def refuses_client(error: BaseException) -> bool:
    text = str(error)
    return any(words in text for words in REFUSALS)


# Error replies that say this server cannot serve the command now, though it or the master that
# replaces it will: a master short of the replicas ``min-replicas-to-write`` asks for, a replica (a
# demoted master), a server loading its data, a Cluster or a master that is down, a slot being moved.
# An outage like a lost connection: the outage policy answers, settlements stay buffered (the
# charge markers make their retry safe). Inside a script the code comes with the script's words.
UNSERVED = ("NOREPLICAS", "READONLY", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")
_UNSERVED_WORDS = re.compile(r"(?<![A-Za-z])(?:" + "|".join(UNSERVED) + r")\b")
# redis-py's classes for some of them (most specific first), whose text it strips of the code.
_UNSERVED_KINDS: tuple[tuple[type[redis.exceptions.RedisError], str], ...] = (
    (redis.exceptions.ReadOnlyError, "READONLY"), (redis.exceptions.BusyLoadingError, "LOADING"),
    (redis.exceptions.TryAgainError, "TRYAGAIN"), (redis.exceptions.MasterDownError, "MASTERDOWN"),
    (redis.exceptions.ClusterDownError, "CLUSTERDOWN"))


def unserved(error: BaseException) -> str | None:
    """The code of a reply of a server that cannot serve the command now (see :data:`UNSERVED`), else ``None``."""
    for kind, code in _UNSERVED_KINDS:
        if isinstance(error, kind):
            return code
    found = _UNSERVED_WORDS.search(str(error))
    return found.group(0) if found is not None else None


def demoted(error: BaseException) -> bool:
    """Whether ``error`` says the server written to is not a master that can take writes: ``READONLY``
    (a replica now, a demoted master) or ``NOREPLICAS`` (a master whose replica was just promoted
    in its place, or that lost its replicas): its connections are dropped, so the next one asks
    where the master is (on a plain URL it reconnects to the same address: one probe at a time)."""
    return unserved(error) in ("READONLY", "NOREPLICAS")


def refused(error: redis.exceptions.ResponseError) -> redis.exceptions.ConnectionError | None:
    """An error reply that refuses this client, or one of a server that cannot serve it now
    (:func:`unserved`), as the outage it is to the caller (else ``None``: a reply the plan may handle)."""
    if refuses_client(error):
        return redis.exceptions.ConnectionError(f"redis refused this client: {error}")
    if (code := unserved(error)) is not None:
        text = str(error)
        return redis.exceptions.ConnectionError(
            f"redis cannot serve this now: {text if text.startswith(code) else f'{code} {text}'}")
    return None


def unavailable(error: BaseException) -> StoreUnavailable:
    """The store's outage, from a transport error that is :func:`down`: where the store decides it is
    unavailable (what the outage means to a request: :mod:`.verdicts` and :mod:`..health`)."""
    return StoreUnavailable(f"redis: {error}")


# Seconds between asks of Sentinel where the master is, before a settlement batch (see RedisPy.follow_master).
MASTER_CHECK = 1.0


class Unreplicated(redis.exceptions.ConnectionError):
    """Writes the master applied that fewer replicas than asked acknowledged (``WAIT``, :mod:`.replication`):
    an outage to the caller (a failover could lose them), though the master holds them."""


class Landed(Exception):
    """A cancelled batch whose commands were all applied: its caller is cancelled all the same, but
    must not write it again (see :meth:`.accelerated.mux.Direct.call_many`)."""


class SyncTransport(Protocol):
    @property
    def client(self) -> Any:
        """The redis-py client under it (for commands of the store's user)."""

    def execute(self, step: Step) -> Any:
        """The step's reply; a batch's reply is the list of its replies (an error reply raised)."""

    def follow_master(self) -> None:
        """Before a settlement batch: make sure it goes to the master Sentinel names (a Sentinel
        client only; see :meth:`RedisPy.follow_master`)."""

    def demoted(self) -> None:
        """The server answered ``READONLY`` or ``NOREPLICAS`` (:func:`demoted`): drop every connection,
        so the next one finds the master (a Sentinel pool asks Sentinel; a host name is resolved again)."""

    def close(self) -> None: ...


class AsyncTransport(Protocol):
    def aexecute(self, step: Step, deadline: float | None) -> Awaitable[Any]:
        """The step's reply, to await; past ``deadline`` (loop time) a ``redis.exceptions.TimeoutError``."""

    async def afollow_master(self) -> None:
        """:meth:`SyncTransport.follow_master`, on this loop."""

    async def ademoted(self) -> None:
        """:meth:`SyncTransport.demoted`, on this loop."""

    async def aclose(self) -> None: ...


def decodes(client: Any) -> bool:
    """Whether ``client`` answers in ``str`` (``decode_responses=True``); the replies of one that
    answers in ``bytes`` (redis-py's default) are decoded here, so any client works."""
    return bool(client.get_connection_kwargs().get("decode_responses"))


def decoded(reply: Any) -> Any:
    """A reply of a client that answers in ``bytes``, as one that decodes would have given it."""
    if isinstance(reply, bytes):
        return reply.decode()
    if isinstance(reply, list):
        return [decoded(each) for each in reply]
    if isinstance(reply, dict):
        return {decoded(key): decoded(value) for key, value in reply.items()}
    return reply


def pipeline(client: Any, batch: Batch) -> Any:
    """A redis-py pipeline (sync or async) holding the batch's commands, not yet executed."""
    pipe = client.pipeline(transaction=False)
    for step in batch.steps:
        if isinstance(step, Call):
            getattr(pipe, step.method)(*step.args)
        else:
            # execute_command, not evalsha: cluster pipelines refuse the named method but route
            # EVALSHA by its keys when given as a raw command.
            pipe.execute_command("EVALSHA", step.script.sha, len(step.keys), *step.keys, *step.args)
    return pipe


def _missing_scripts(replies: list[Any]) -> list[int]:
    return [index for index, reply in enumerate(replies) if isinstance(reply, redis.exceptions.NoScriptError)]


def _again(batch: Batch, missing: list[int]) -> list[int]:
    """The places of the commands to send again after NOSCRIPT: those script calls, and a ``WAIT``
    after them (:mod:`.replication`: it must follow the writes it waits for)."""
    first = missing[0]
    waits = [index for index, step in enumerate(batch.steps)
             if index > first and isinstance(step, Call) and step.method == "wait"]
    return sorted({*missing, *waits})


def _raise_first_error(replies: list[Any]) -> list[Any]:
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


class _Scripts:
    """redis-py ``Script`` objects of one client, by script (``register_script``: made once each)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._made: dict[str, Any] = {}

    def __call__(self, script: Script) -> Any:
        found = self._made.get(script.sha)
        if found is None:
            found = self._made[script.sha] = self.client.register_script(script.source)
        return found


class RedisPy:
    """The reference sync transport over a redis-py client (standalone, Sentinel or Cluster).

    A pipelined batch whose replies include NOSCRIPT has those scripts loaded and those commands
    sent again, here: redis-py leaves that to the caller on a Cluster pipeline, and on a plain one
    checks ``SCRIPT EXISTS`` before every batch (a round trip per flush)."""

    def __init__(self, client: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.decode = not decodes(client)
        self.scripts = _Scripts(client)
        self.clock = clock
        pool = getattr(client, "connection_pool", None)
        self.sentinel_pool: Any = pool if isinstance(pool, redis.sentinel.SentinelConnectionPool) else None
        self.master_checked = float("-inf")
        self.following = threading.Lock()

    def follow_master(self) -> None:
        """Ask Sentinel where the master is, at most every :data:`MASTER_CHECK` seconds: when it names
        another (a failover), redis-py's pool drops its idle connections (``get_master_address``)
        and those in use are dropped before their next send (:mod:`.masters`), so the batch goes to
        the new master, not to the old one, which takes writes until Sentinel demotes it (seconds)
        and then discards them. A Sentinel that cannot be asked changes nothing."""
        pool = self.sentinel_pool
        if pool is None:
            return
        with self.following:  # a batch drained meanwhile on another thread waits for the answer
            if self.clock() - self.master_checked >= MASTER_CHECK:
                self.master_checked = self.clock()
                with contextlib.suppress(redis.exceptions.RedisError):
                    pool.get_master_address()

    def execute(self, step: Step) -> Any:
        client = self.client
        if isinstance(step, Call):
            reply = getattr(client, step.method)(*step.args)
        elif isinstance(step, Eval):
            reply = self.scripts(step.script)(step.keys, step.args, client)
        else:
            replies = pipeline(client, step).execute(raise_on_error=False)
            missing = _missing_scripts(replies)
            if missing:
                places = _again(step, missing)
                again = [step.steps[index] for index in places]
                for script in {each.script: None for each in again if isinstance(each, Eval)}:
                    client.script_load(script.source)
                for index, reply in zip(places, pipeline(client, Batch(again)).execute(raise_on_error=False),
                                        strict=True):
                    replies[index] = reply
            reply = _raise_first_error(replies)
        return decoded(reply) if self.decode else reply

    def demoted(self) -> None:
        pool = getattr(self.client, "connection_pool", None)  # a Cluster's nodes follow MOVED themselves
        if pool is not None:
            pool.disconnect()

    def close(self) -> None:
        self.client.close()


class AsyncRedisPy:
    """The reference async transport over one event loop's redis-py asyncio client; ``limiter``
    queues calls where the client's pools would raise when full (the async Cluster's)."""

    def __init__(self, client: Any, limiter: asyncio.Semaphore | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.limiter = limiter
        self.decode = not decodes(client)
        self.scripts = _Scripts(client)
        self.clock = clock
        pool = getattr(client, "connection_pool", None)
        self.sentinel_pool: Any = pool if isinstance(pool, redis.asyncio.sentinel.SentinelConnectionPool) else None
        self.master_checked = float("-inf")
        self.master_seen: Any = None  # the master's address when this transport last asked Sentinel
        self.following = asyncio.Lock()

    async def afollow_master(self) -> None:
        """:meth:`RedisPy.follow_master` on this loop. When the master moved, every connection is
        dropped, those in use too: a call still waiting on the old master is sent again, and every
        later send goes, to the new one (a connection reconnects through Sentinel, :mod:`.masters`;
        redis-py's own reconnect reopened the old address, and its async pool takes a connection
        back as it is)."""
        pool = self.sentinel_pool
        if pool is None:
            return
        # A batch drained while another drain asks Sentinel waits for the answer: it would otherwise
        # find the check just made and write on a connection to the old master meanwhile.
        async with self.following:
            if self.clock() - self.master_checked < MASTER_CHECK:
                return
            self.master_checked = self.clock()
            # Compared with the address this transport saw last (else the pool's before this check),
            # not with the pool's: a connection opened meanwhile (an admission's) asks Sentinel too
            # and updates the pool's address, dropping only idle connections, so the pool's would
            # already name the new master here and those in use would go on writing to the old one.
            seen = self.master_seen or pool.master_address
            with contextlib.suppress(redis.exceptions.RedisError):
                now = await pool.get_master_address()
                self.master_seen = now
                if seen is not None and now != seen:
                    await pool.disconnect(inuse_connections=True)

    async def aexecute(self, step: Step, deadline: float | None) -> Any:
        if deadline is None:
            return await self._limited(step)
        if deadline <= asyncio.get_running_loop().time():
            raise redis.exceptions.TimeoutError("no reply from redis within the request timeout")
        try:
            async with asyncio.timeout_at(deadline):
                return await self._limited(step)
        except TimeoutError:
            raise redis.exceptions.TimeoutError("no reply from redis within the request timeout") from None

    async def _limited(self, step: Step) -> Any:
        if self.limiter is None:
            reply = await self._execute(step)
        else:
            async with self.limiter:
                reply = await self._execute(step)
        return decoded(reply) if self.decode else reply

    async def _execute(self, step: Step) -> Any:
        client = self.client
        if isinstance(step, Call):
            return await getattr(client, step.method)(*step.args)
        if isinstance(step, Eval):
            return await self.scripts(step.script)(step.keys, step.args, client)
        replies = await pipeline(client, step).execute(raise_on_error=False)
        missing = _missing_scripts(replies)
        if missing:
            places = _again(step, missing)
            again = [step.steps[index] for index in places]
            for script in {each.script: None for each in again if isinstance(each, Eval)}:
                await client.script_load(script.source)
            for index, reply in zip(places, await pipeline(client, Batch(again)).execute(raise_on_error=False),
                                    strict=True):
                replies[index] = reply
        return _raise_first_error(replies)

    async def ademoted(self) -> None:
        pool = getattr(self.client, "connection_pool", None)
        if pool is not None:
            await pool.disconnect()

    async def aclose(self) -> None:
        await self.client.aclose()
