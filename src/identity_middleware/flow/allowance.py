"""What a request meets while the store is down: ``on_store_error`` per identity, the local allowance,
and the outage logged once when it starts and once when it ends (:class:`OutageLog`), not once per request.

``on_store_error`` is ``"open"`` (let the request through untracked), ``"closed"`` (503), an
:class:`Allowance`, or a callable ``(external_id, request) -> one of those`` asked per request
during an outage (``request``: the :class:`~identity_middleware.flow.Request`, with ``path``,
``header(name)`` and ``body``), so that, say, paying customers get an allowance and free ones a 503.

**The local allowance.** Under ``Allowance("0.50")`` each process admits an identity, while the
store is down, until what it admitted of that identity (its estimates, then its recorded costs as
requests end) reaches $0.50; then it refuses (503). An admitted request is metered as usual: its
meter carries the identity as this process last saw it, and its settlement waits in the store's
write-behind buffer, written to Redis once (settle ids make a retry a no-op) when Redis answers
again, so it lands in the identity's spend and metrics. When the outage ends (the store answers, and
what it buffered meanwhile is written), the process logs what it admitted meanwhile and the
allowance starts afresh. Only an identity this process has admitted
before the outage can be metered (its record is cached); any other is refused (503).

**Overshoot bound.** Redis sees none of this until it returns, so with N processes an identity can
spend, per outage, up to ``N x amount`` beyond what its budgets allowed when the outage began, plus
in each process what its last admitted request cost above its estimate (admission counts the
estimate; the allowance refuses once recorded costs reach the amount). A lease (``RedisOptions(lease=
Lease())``) admits from its leased headroom during an outage without asking the allowance at all.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ..core.money import format_usd, from_nanos
from ..core.outage import Allowance, OutagePolicy, PolicyChoice

__all__ = ["AllowanceLedger", "OutageLog", "choose"]

logger = logging.getLogger("identity_middleware")


def choose(policy: OutagePolicy, external_id: str, request: Any) -> PolicyChoice:
    """The policy for this identity's request; a callable's answer that is none is ``"closed"``
    (logged): an outage is no time to let through what nobody decided to let through."""
    if not callable(policy):
        return policy
    try:
        chosen = policy(external_id, request)
    except Exception:
        logger.exception("on_store_error(%r, request) raised; the request is refused (503)", external_id)
        return "closed"
    if chosen in ("open", "closed") or isinstance(chosen, Allowance):
        return chosen
    logger.error('on_store_error(%r, request) answered %r, not "open", "closed" or an Allowance; '
                 "the request is refused (503)", external_id, chosen)
    return "closed"


class AllowanceLedger:
    """What this process admitted per identity (external id) during the current outage, nano-USD."""

    def __init__(self) -> None:
        self._admitted: dict[str, int] = {}
        self.requests = 0  # admitted by an allowance during the current outage
        self.cost = 0  # what those requests recorded, as they ended
        self._lock = threading.Lock()

    def admit(self, external_id: str, estimate: int, allowance: Allowance) -> bool:
        """Hold ``estimate`` of the identity's allowance; ``False`` (nothing held) once it is spent."""
        with self._lock:
            admitted = self._admitted.get(external_id, 0)
            if admitted >= allowance.nanos or admitted + estimate > allowance.nanos:
                return False
            self._admitted[external_id] = admitted + estimate
            self.requests += 1
            return True

    def settled(self, external_id: str, held: int, cost: int) -> None:
        """A request admitted by the allowance ended having recorded ``cost``: it replaces ``held``."""
        with self._lock:
            self.cost += cost
            if external_id in self._admitted:  # not when the outage ended meanwhile
                self._admitted[external_id] += cost - held

    def ended(self) -> None:
        """The store answers again: log what was admitted meanwhile, and start afresh."""
        with self._lock:
            requests, cost, identities = self.requests, self.cost, len(self._admitted)
            self._admitted.clear()
            self.requests = self.cost = 0
        if requests:
            logger.warning("during the store outage this process admitted %d requests of %d identities by the "
                           "local allowance, $%s recorded so far; written to the store as it answers again",
                           requests, identities, format_usd(from_nanos(cost)))


class OutageLog:
    """Logs a store outage once when it starts and once when it ends. ``down`` while an outage is
    logged; callers may test it before calling :meth:`ok`."""

    def __init__(self) -> None:
        self.down = False
        self._lock = threading.Lock()

    def failed(self, error: BaseException) -> None:
        with self._lock:
            if self.down:
                return
            self.down = True
        logger.error("identity store unavailable (%s); further failures are not logged until it recovers", error)

    def ok(self) -> None:
        if self.down:
            with self._lock:
                if not self.down:
                    return
                self.down = False
            logger.warning("identity store available again")
