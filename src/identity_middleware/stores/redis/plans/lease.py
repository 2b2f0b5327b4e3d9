"""The request path's share of leasing (:mod:`..lease`): local admission, and the scripts' lease arguments.

An admission is made here, with no round trip, when the identity's record is cached, the request
changes nothing in it, no model, provider or workspace budget applies, and this process's lease
covers the estimate; otherwise the admit script runs as ever and also takes or grows the lease in
the same call. Settle calls charge leased requests to their lease and renew it in the same call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from ....core.admission import Admission, AdmissionRequest, Reservation, Settlement
from ....core.models import Identity, IdentityInput
from ....core.periods import UTC
from ..keys import identity_tag
from ..lease import Ask, Leases
from ..scripts import LEASE
from ..steps import Batch, Plan
from . import codec
from .records import Records
from .registry import Registry


def unchanged(upsert: IdentityInput, identity: Identity) -> bool:
    """Whether the admit script would leave the record as it is (the same canonical JSON)."""
    return all(codec.encode(name, value) == codec.encode(name, getattr(identity, name))
               for name, value in upsert.changes().items())


class LeasePlans:
    """This process's leases on the request path, over the records and the registry."""

    def __init__(self, records: Records, registry: Registry, leases: Leases) -> None:
        self.records = records
        self.registry = registry
        self.leases = leases

    def admit_locally(self, request: AdmissionRequest) -> Admission | None:
        """The admission this process's lease makes for ``request``, or ``None`` (ask Redis)."""
        leases = self.leases
        # Steering needs the budgets' figures at admission, which only Redis has: asked there.
        if request.refused or request.now is not None or request.consumed:
            return None
        tag = identity_tag(request.external_id)
        cached = self.records.cached(tag)
        if cached is None or leases.held(tag) is None:
            return None
        identity = cached[1]
        if request.last_source and request.last_source != identity.last_source:
            return None
        if request.upsert is not None and not unchanged(request.upsert, identity):
            return None
        if self.registry.may_apply(request):
            return None
        held = leases.take(tag, request.estimate)
        if held is None:
            return None
        return Admission(identity, None, Reservation("", identity.id, request.estimate, _NEVER, lease=held.id))

    async def await_lease(self, request: AdmissionRequest, timeout: float | None) -> Admission | Ask | None:
        """When :meth:`admit_locally` answered ``None``: the admission it makes after waiting (up to
        ``timeout``) for the lease calls this loop has in flight while they grow the lease; else the
        lease call to make with the admit plan (``None`` when one is in flight)."""
        leases = self.leases
        tag = identity_tag(request.external_id)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while (waiter := leases.waiter(tag)) is not None:
            done, _ = await asyncio.wait([waiter], timeout=None if deadline is None else deadline - loop.time())
            admission = self.admit_locally(request)
            if admission is not None:
                return admission
            if not done or not waiter.result():  # no answer in time, or nothing added: ask Redis
                return None
        return self.lease_ask(tag, request)[0]

    def sourced(self, tag: str, identity: Identity, source: str | None) -> Identity:
        """With leasing, the cached record as the admit script left it: the script writes the
        request's source without sending the record again, and a stale one would send every later
        request of that source to Redis."""
        if not source or identity.last_source == source:
            return identity
        identity = identity.model_copy(update={"last_source": source})
        self.records.recache(tag, identity)
        return identity

    def lease_ask(self, tag: str, request: AdmissionRequest) -> tuple[Ask | None, str]:
        """A lease call to make with this admission: take (or grow) this process's lease, unless
        a call for it is in flight; and the admit script's argument for it."""
        leases = self.leases
        if request.refused or request.now is not None \
                or self.registry.may_apply(request, unknown=False):
            return None, ""
        return self.lease_arg(leases.ask(tag))

    def lease_arg(self, ask: Ask | None) -> tuple[Ask | None, str]:
        if ask is None:
            return None, ""
        lease = self.leases.lease
        return ask, f"{int(ask.create)} {ask.lease_id} {lease.fraction} {lease.ttl_ms} {ask.give}"

    def lease_admitted(self, ask: Ask | None, reply: Any) -> None:
        if ask is None:
            return
        if len(reply) > 6 and isinstance(reply[6], list):
            self.leases.answered(ask, bool(int(reply[6][0])), int(reply[6][1]))
        else:
            self.leases.failed(ask)

    def settled_locally(self, settlement: Settlement) -> None:
        """Take a leased request's cost off its lease here, before the settle call tells Redis."""
        reservation = settlement.reservation
        if reservation is not None and reservation.lease:
            self.leases.settled(reservation.lease, reservation.amount, settlement.usage.cost)

    def lease_settle_args(self, tag: str, charged: dict[str, int]) -> tuple[Ask | None, list[str | int]]:
        """The settle script's ARGV 10 and 11 for one charge: its leased costs (``charged``: lease id
        -> cost), and a renewal when due. The ask returned lists the leases charged, in order;
        ``None`` when there is neither."""
        leases = self.leases
        ask = leases.ask(tag, for_settle=True)
        if ask is None and not charged:
            return None, ["", ""]
        if ask is None:
            ask = Ask(tag, "", False, False, 0.0, 0.0)  # not registered: it only carries the charges
        ask.charged = [f"{lease_id}:{cost}" for lease_id, cost in charged.items()]
        renewal = ask.spec(leases.lease.fraction, leases.lease.ttl_ms) if ask.lease_id else ""
        return ask, [" ".join([str(codec.ms(datetime.now(UTC))), *ask.charged]), renewal]

    def lease_settle_reply(self, ask: Ask | None, reply: Any) -> Any:
        """The settle script's reply without its lease part, which is applied here."""
        leases = self.leases
        if ask is None:
            return reply
        if not isinstance(reply, list):  # 0: the identity is gone, and its leases with it; 2: a retry
            for charged in ask.charged:
                if not int(reply):
                    leases.covered(charged.partition(":")[0], 0, -1)
            if ask.lease_id and int(reply):
                leases.failed(ask)
            elif ask.lease_id:
                leases.answered(ask, False, 0)
            return reply
        renewed, *covered = reply[-1]
        if ask.lease_id:
            if int(renewed[0]) < 0:
                leases.failed(ask)
            else:
                leases.answered(ask, bool(int(renewed[0])), int(renewed[1]))
        for charged, amount in zip(ask.charged, covered, strict=True):
            lease_id, _, cost = charged.partition(":")
            leases.covered(lease_id, int(cost), int(amount))
        return reply[:-1]

    def lease_failed(self, asks: Sequence[Ask | None]) -> None:
        for ask in asks:
            if ask is not None and ask.lease_id:
                self.leases.failed(ask)

    def release_leases(self) -> Plan[None]:
        """Give back the headroom of every lease this process holds (its leased requests settled first)."""
        held = self.leases.drop_all()
        if not held:
            return
        now = datetime.now(UTC)
        current = self.records.window_of(now)
        steps = [self.records.eval(LEASE, lease.tag, current, [lease.id, codec.ms(now)]) for lease in held]
        yield Batch(steps) if len(steps) > 1 else steps[0]


_NEVER = datetime.max.replace(tzinfo=UTC) - timedelta(days=1)  # a leased request holds no reservation of its own
