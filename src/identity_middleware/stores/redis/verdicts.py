"""What a failed Redis call means: to the store's breaker, and to the caller of the request path.

:func:`failure_of` says what the call met (refused, reset, or only late) by the exceptions redis-py,
the socket layer and asyncio raise, walking the chain a runner wrapped them in; the breaker
(:mod:`..health`; one per Cluster master, :mod:`.shards`) decides an outage from that.
:class:`Verdicts` turns the failure into what the request meets: an outage (:class:`StoreUnavailable`,
the outage policy), a late reply (:class:`StoreLate`, 503) or, at startup, a store that can never
work (:class:`StoreMisconfigured`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import redis.exceptions

from ...core.admission import Admission, AdmissionRequest
from ...core.errors import StoreLate, StoreMisconfigured, StoreUnavailable
from ..health import Failure, Health
from ..urls import masked
from .shards import Shards
from .steps import Call, Plan
from .transport import refuses_client

__all__ = ["Verdicts", "failure_of", "refused_client"]

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


LATE_LOG_EVERY = 60.0  # seconds between warnings about late admissions
logger = logging.getLogger("identity_middleware")


def _ping() -> Plan[object]:
    return (yield Call("ping"))


class Verdicts:
    """The request path's judge for one store: its breakers (:mod:`.shards`: one, or one per
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
