"""Plans for the request path: admit (one script call) and settle (a batch, one call per identity)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta

from ....core.admission import Admission, AdmissionRequest, Reservation, Settlement, decide
from ..keys import Window, identity_tag, window
from ..scripts import SETTLE
from ..steps import Batch, Eval, Plan
from . import codec
from .base import PlanBase


class RequestPlans(PlanBase):
    def admit(self, request: AdmissionRequest) -> Plan[Admission]:
        now = codec.now_or(request.now)
        upsert = request.upsert
        changes = upsert.changes() if upsert is not None else {}
        reservation_id = uuid.uuid4().hex if request.estimate > 0 else ""
        tag = identity_tag(request.external_id)
        cached = self._records.get(tag)
        # A ULID is made only for an identity this process has not seen; for a cached one the
        # script answers {3} if it is gone after all, and the call is made again with a new ULID.
        ulid = "" if cached is not None else None
        while True:
            reply = yield self._write(
                "admit", request.external_id, changes, now, may_create=upsert is not None or request.create_missing,
                refused=request.refused, estimate=request.estimate, reservation_id=reservation_id,
                default_budgets=request.default_budgets, tag=tag, known=cached[0] if cached is not None else "",
                ulid=ulid, last_source=request.last_source,
            )
            if reply[0] != 3:
                break
            ulid = None
        if reply[0] == 0:
            self._records.pop(tag, None)
            return Admission(None)
        identity = yield from self._indexed(reply, tag, cached)
        states = codec.states(reply[3], now, self.tz)
        if reply[4]:
            return Admission(identity, decide(states, request.estimate, now))
        if not reply[5]:
            return Admission(identity)
        expires = now + timedelta(seconds=self.reservation_ttl)
        periods = tuple(state.period.value for state in states)
        return Admission(identity, None, Reservation(reservation_id, identity.id, request.estimate, expires, periods))

    def settle(self, settlements: Sequence[Settlement]) -> Plan[int]:
        """Commit settlements in one pipelined round trip (plus one for uncached tags). Returns how
        many were charged (a deleted identity's are dropped, as MemoryStore does)."""
        tags = yield from self.tags_of({settlement.identity_id for settlement in settlements})
        # One script call per identity and time window: their usage summed, reservations released.
        groups: dict[tuple[str, Window], list[Settlement]] = {}
        for settlement in settlements:
            if settlement.identity_id in tags:
                key = (settlement.identity_id, window(codec.now_or(settlement.now), self.tz))
                group = groups.get(key)
                if group is None:
                    groups[key] = [settlement]
                else:
                    group.append(settlement)
        if not groups:
            return 0
        steps = [self._settle_eval(ulid, current, group, tags[ulid]) for (ulid, current), group in groups.items()]
        replies = yield Batch(steps)
        return sum(int(reply) * len(group) for reply, group in zip(replies, groups.values(), strict=True))

    def _settle_eval(self, ulid: str, current: Window, group: Sequence[Settlement], tag: str) -> Eval:
        cost = input_tokens = output_tokens = errors = 0
        members: list[str] = []
        for settlement in group:
            usage = settlement.usage
            cost += usage.cost
            input_tokens += usage.input_tokens
            output_tokens += usage.output_tokens
            errors += usage.error
            reservation = settlement.reservation
            if reservation is not None:
                members.append(f"{reservation.amount}:{reservation.id}")
        args: list[str | int] = [ulid, cost, input_tokens, output_tokens, len(group), errors,
                                 current.expire_at, " ".join(members)]
        args += codec.day_increments(settlement.usage for settlement in group)
        return self._eval(SETTLE, tag, current, args)
