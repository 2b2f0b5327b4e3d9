"""What a failed Redis call means, to the breaker that judges it and to the caller of the request path.

:func:`failure_of` says what the call met (refused, reset, or only late) by the exceptions redis-py,
the socket layer and asyncio raise, walking the chain a runner wrapped them in; the breaker
(:mod:`..health`; one per Cluster master, :class:`Shards`) decides an outage from that.
:class:`Verdicts` turns the failure into what the request meets: an outage (:class:`StoreUnavailable`,
the outage policy), a late reply (:class:`StoreLate`, 503) or, at startup, a store that can never
work (:class:`StoreMisconfigured`).

One breaker per Cluster master (:class:`Shards`), so that a master's outage is its identities', not
the store's. A standalone server or a Sentinel's master is one shard: the store has one breaker.
On a Cluster each master serves the identities of its slots, and one master's loss (a failover
takes seconds) says nothing about the others. So an admission is judged by the breaker of the
master that serves its identity's slot, as the client's slot map names it (:func:`node_of`, no
round trip): while one master fails, identities on the other masters are admitted as usual, and
only those it holds meet the outage policy. A call whose master is not known (the client not built
yet, a slot no master serves) is judged by the store's own breaker.

A master that was replaced (its replica promoted, the slots another node's now) is asked no more:
a breaker no call has asked for :data:`IDLE` seconds is forgotten, so the store is not taken for
partly down (:attr:`Shards.down`) because of a node that no longer serves anything.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import redis.exceptions

from ...core.admission import Admission, AdmissionRequest
from ...core.errors import StoreLate, StoreMisconfigured, StoreUnavailable
from ..health import Failure, Health
from ..urls import masked
from .keys import identity_tag
from .steps import Call, Plan
from .transport import refuses_client

__all__ = ["IDLE", "Shards", "Verdicts", "failure_of", "node_of", "refused_client"]

# Said of a connection that could not be made at all (redis-py words it "Error 111 connecting ...").
_REFUSED_WORDS = ("connection refused", "error 111 ", "name or service not known", "no route to host",
                  "network is unreachable", "nodename nor servname")
_TIMEOUTS = (redis.exceptions.TimeoutError, TimeoutError, asyncio.TimeoutError)


def failure_of(error: BaseException) -> Failure:
    """The :class:`Failure` that ``error`` (a :class:`StoreUnavailable` or what it wraps) stands for.

    A timeout anywhere in the chain is ``TIMEOUT`` (a dead server or a slow process: the breaker
    tells them apart over time), as is a full connection pool (this process's own congestion). A
    refused connection, an unknown host, a refused password or database is ``REFUSED``; any other broken
    connection ``RESET``. A store error raised with no cause is a deadline that passed: ``TIMEOUT``.
    """
    chain = _chain(error)
    if any(isinstance(each, _TIMEOUTS) for each in chain):
        return Failure.TIMEOUT
    if any(isinstance(each, redis.exceptions.MaxConnectionsError) for each in chain) or any(
            "no connection available" in str(each).lower() for each in chain):
        return Failure.TIMEOUT
    if refused_client(error) or any(isinstance(each, ConnectionRefusedError) for each in chain):
        return Failure.REFUSED
    if any(word in str(each).lower() for each in chain for word in _REFUSED_WORDS):
        return Failure.REFUSED
    if len(chain) == 1 and isinstance(error, StoreUnavailable):
        return Failure.TIMEOUT
    return Failure.RESET


def refused_client(error: BaseException) -> bool:
    """Whether Redis answered, refusing this client (a password missing or wrong, no such database):
    it cannot work until it is reconfigured."""
    return any(isinstance(each, redis.exceptions.AuthenticationError) or refuses_client(each) for each in _chain(error))


def _chain(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain and len(chain) < 8:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


IDLE = 10.0  # seconds after which a breaker no call has asked is forgotten


class Shards:
    """The store's breaker and, on a Cluster, one per master (by node name, ``host:port``)."""

    def __init__(self, make: Callable[[], Health], clock: Callable[[], float] = time.monotonic) -> None:
        self._make = make
        self._clock = clock
        self.store = make()  # the store's own: a server's, or a Cluster call's whose master is not known
        self._store_asked = float("-inf")
        self._nodes: dict[str, tuple[Health, list[float]]] = {}  # breaker, [when last asked]
        self._lock = threading.Lock()

    def of(self, node: str | None) -> Health:
        """The breaker that judges a call to ``node`` (``None``: the store's)."""
        now = self._clock()
        if node is None:
            self._store_asked = now
            return self.store
        found = self._nodes.get(node)
        if found is None:
            with self._lock:
                found = self._nodes.get(node)
                if found is None:
                    found = self._nodes[node] = (self._make(), [now])
        found[1][0] = now
        return found[0]

    @property
    def down(self) -> bool:
        """Whether a breaker asked within :data:`IDLE` seconds is open: the store, or part of it,
        is known to be down (forgotten breakers are dropped here)."""
        now = self._clock()
        if self.store.down and now - self._store_asked < IDLE:
            return True
        if not self._nodes:
            return False
        with self._lock:
            for node, (health, asked) in list(self._nodes.items()):
                if now - asked[0] >= IDLE:
                    del self._nodes[node]
                elif health.down:
                    return True
        return False


def node_of(client: Any, external_id: str) -> str | None:
    """The name (``host:port``) of the master that serves ``external_id``'s slot in the slot map of
    ``client``, a redis-py Cluster client, sync or async (no round trip); ``None`` when no master
    serves it now."""
    try:
        node = client.get_node_from_key(f"{{{identity_tag(external_id)}}}")
    except redis.exceptions.RedisClusterException:  # SlotNotCoveredError
        return None
    return None if node is None else str(node.name)


LATE_LOG_EVERY = 60.0  # seconds between warnings about late admissions
logger = logging.getLogger("identity_middleware")


def _ping() -> Plan[object]:
    return (yield Call("ping"))


class Verdicts:
    """The request path's judge for one store: its breakers (:class:`Shards`: one, or one per
    Cluster master), its bound and its URL (masked)."""

    def __init__(self, shards: Shards, bound: float | None, url: str | None) -> None:
        self.shards = shards
        self.health = shards.store
        self.bound = bound
        self.where = masked(url) if url is not None else "the Redis client given"
        self._late_logged = -LATE_LOG_EVERY

    def admitting(self, node: str | None = None,
                  admission: Coroutine[Any, Any, object] | Plan[Any] | None = None) -> Health:
        """The breaker of ``node`` (the master serving the identity, on a Cluster; else the store's)
        if it lets an admission be tried, else the outage raised (:meth:`down`), ``admission`` (not
        begun) closed."""
        health = self.shards.of(node)
        if not health.admits():
            if admission is not None:
                admission.close()
            raise self.down(health, node)
        return health

    def guarded(self, admit: Callable[[AdmissionRequest], Admission], request: AdmissionRequest,
                node: str | None = None) -> Admission:
        """``admit(request)`` if the breaker of ``node`` lets it be tried (:meth:`admitting`), its
        failure judged."""
        health = self.admitting(node)
        try:
            admission = admit(request)
        except StoreUnavailable as error:
            # A sync call's timeout is the kernel's: no reply had come, however late the thread ran.
            raise self.judged(error, 0.0, health) from error
        health.answered()
        return admission

    async def aguarded(self, admission: Coroutine[Any, Any, Admission], node: str | None = None) -> Admission:
        """The async twin of :meth:`guarded`: ``admission`` awaited (or closed, when not tried). An
        admission that is one plan run is judged by :func:`.runner.arun` itself (``verdicts=``)."""
        health = self.admitting(node, admission)
        began = time.monotonic()
        try:
            found = await admission
        except StoreUnavailable as error:
            raise self.judged(error, time.monotonic() - began, health) from error
        health.answered()
        return found

    def check(self, run: Callable[[Plan[object]], object]) -> None:
        """At startup, one PING run with ``run``: :class:`StoreMisconfigured` when Redis refuses this
        client (a password missing or wrong, no such database), :class:`StoreUnavailable` when it
        cannot be reached now; both name the URL (password masked) and the cause."""
        try:
            run(_ping())
        except StoreUnavailable as error:
            raise self.at_startup(error) from error

    async def acheck(self, arun: Callable[[Plan[object]], Awaitable[object]]) -> None:
        try:
            await arun(_ping())
        except StoreUnavailable as error:
            raise self.at_startup(error) from error

    def down(self, health: Health, node: str | None = None) -> StoreUnavailable:
        """What a call meets while its breaker is open: it is not tried."""
        cause = health.cause.value if health.cause is not None else "down"
        what = "down" if node is None else f"the master at {node} is down"
        return StoreUnavailable(f"redis: {what} ({cause}); not tried again until a probe is answered")

    def judged(self, error: StoreUnavailable, waited: float, health: Health) -> StoreUnavailable:
        """``error`` as the request path meets it, after ``waited`` seconds (0: not measured): an
        outage when the call's breaker (``health``) opens or is open, else only this call's
        lateness (:class:`StoreLate`)."""
        late = waited - self.bound if self.bound is not None and waited else 0.0
        if health.failed(failure_of(error), late=late):
            return error
        now = time.monotonic()
        if now - self._late_logged >= LATE_LOG_EVERY:  # a starved host refuses many: said once a minute
            self._late_logged = now
            logger.warning("identity store %s did not answer an admission within %s s (%s) but is not known "
                           "to be down: such requests are refused (503), not let through", self.where, self.bound,
                           str(error).removeprefix("redis: "))
        return StoreLate(f"{error}; redis is not known to be down, so the request is refused, not let through")

    def at_startup(self, error: StoreUnavailable) -> StoreUnavailable | StoreMisconfigured:
        """``error`` met by the startup check, in words that name the URL and the cause."""
        cause = str(error).removeprefix("redis: ")
        if refused_client(error):
            return StoreMisconfigured(f"identity store {self.where}: Redis refused this client ({cause}); "
                                      "check the password and the database number in the URL")
        return StoreUnavailable(f"identity store {self.where} cannot be reached ({cause})")
