"""Plans for the request path: admit (one script call) and settle (a batch, one call per identity)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ....core.admission import Admission, AdmissionRequest, Reservation, Settlement
from ....core.budgets import ScopedBudget
from ....core.forecast import identity_span
from ....core.scoped import decide_scoped
from ..keys import Window, identity_tag, window
from ..scripts import SETTLE
from ..steps import Batch, Eval, Plan
from . import codec
from .charges import Charge, Open, sum_into
from .globals import GlobalBudgets
from .records import Records
from .refusals import logging_refusal, refusal_key
from .registry import Registry

if TYPE_CHECKING:  # leasing is loaded only when it is on
    from ..lease import Ask
    from .lease import LeasePlans

_NO_LEASE = ("", "")  # the settle script's lease arguments when there is no lease


_DAY_KEYS = 10_000  # identities' previous-day metric keys cached per window


class RequestPlans:
    """Admit and settle, over the records, the registry and global budgets, and leasing when it is on."""

    def __init__(self, records: Records, registry: Registry, globals_: GlobalBudgets,
                 leasing: LeasePlans | None = None) -> None:
        self.records = records
        self.registry = registry
        self.globals = globals_
        self.leasing = leasing
        self.refusals = refusal_key(records.keys.prefix)  # the refusal log, pushed onto by the admit plan
        # The last window's previous UTC day: its start (" <ms>", settle.lua's ARGV 7 tail), its date,
        # and its metrics key (and the key packed) of each identity charged in the window.
        self._previous_day: tuple[Window, str, date, dict[str, tuple[str, bytes]]] | None = None

    def admit(self, request: AdmissionRequest, ask: Ask | None = None, *, ask_lease: bool = True,
              unwritten: str = "", now: datetime | None = None) -> Plan[Admission]:
        """``ask``: the lease call to make with it (else, with ``ask_lease``, one is asked for here);
        ``unwritten``: this process's usage of the identity not yet written, for the script to count
        (:mod:`..unwritten`);
        ``now``: the instant it was looked up for (else the request's)."""
        now = now if now is not None else codec.now_or(request.now)
        upsert = request.upsert
        changes = upsert.changes() if upsert is not None else {}
        reservation_id = uuid.uuid4().hex if request.estimate > 0 else ""
        tag = identity_tag(request.external_id)
        cached = self.records.cached(tag)
        # A ULID is made only for an identity this process has not seen; for a cached one the
        # script answers {3} if it is gone after all, and the call is made again with a new ULID.
        ulid = "" if cached is not None else None
        leasing = self.leasing
        if leasing is None:
            ask, lease = None, ""
        else:
            ask, lease = leasing.lease_ask(tag, request) if ask_lease else leasing.lease_arg(ask)
        reply: Any = ()
        # The buffered charges' total alone, without their markers, unless the budgets' figures are
        # asked for (steering: exact ones) or a lease rides the call: the script asks for the
        # markers ({4}) only when that total would block a request its recorded spend would not.
        unconfirmed = bool(unwritten) and not lease and not request.consumed and not request.fallbacks
        try:  # the lease call is answered at the end, when the registry of global budgets is read too
            while True:
                reply = yield self.records.write(
                    "admit", request.external_id, changes, now, may_create=upsert is not None or request.create_missing,
                    refused=request.refused, estimate=request.estimate, reservation_id=reservation_id,
                    default_budgets=request.default_budgets, tag=tag, known=cached[0] if cached is not None else "",
                    ulid=ulid, last_source=request.last_source, lease=lease, unwritten=unwritten,
                    unconfirmed=unconfirmed, fallbacks=request.fallbacks,
                )
                if reply[0] == 4:
                    unconfirmed = False
                    continue
                if reply[0] != 3:
                    break
                ulid = None
            if reply[0] == 0:
                self.records.forget(tag)
                return Admission(None)
            identity = yield from self.records.indexed(reply, tag, cached)
            if leasing is not None:
                identity = leasing.sourced(tag, identity, request.last_source)
            if reply[4]:  # the budgets' rows are parsed only to answer a 429 or to name what a reservation holds
                states = codec.scoped_states(codec.rows(reply[3]), identity, now, self.records.tz)
                refused = Admission(identity, decide_scoped(states, request.estimate, now))
                return (yield from logging_refusal(refused, self.refusals, request))
            admission = Admission(identity)
            if request.consumed:  # steering: the rows as the budgets' figures
                admission.consumed = codec.consumed(reply[3], now, self.records.tz)
            if request.fallbacks and len(reply) > 7 and int(reply[7]):  # held a smaller estimate
                admission.fallback = int(reply[7])
                request = dataclasses.replace(request, estimate=request.fallbacks[admission.fallback - 1])
            if reply[5]:
                expires = now + timedelta(seconds=self.records.reservation_ttl)
                periods = tuple(row.period for row in codec.rows(reply[3]) if row.amount is not None)
                admission.reservation = Reservation(reservation_id, identity.id, request.estimate, expires, periods)
            if request.refused or not self.registry.global_budgets or self.registry.held_defs() == {}:  # none to check
                return admission
            admission = yield from self.globals.scoped_admission(admission, request, now)
            if admission.blocked is not None:
                return (yield from logging_refusal(admission, self.refusals, request))
            return admission
        finally:  # answered, or failed (an outage, a timeout, the plan closed)
            if leasing is not None:
                leasing.lease_admitted(ask, reply)

    def seal(self, settlements: Sequence[Settlement]) -> list[Charge]:
        """Settlements summed into charges, one per identity and time window, each with a new
        id (what the buffer does as they arrive, at once). A retry sends a charge again as it is."""
        charges: Open = {}
        for settlement in settlements:
            now = codec.now_or(settlement.now)
            sum_into(charges, settlement, window(now, self.records.tz), now)
        return list(charges.values())

    def settle(self, charges: Sequence[Charge]) -> Plan[int]:
        """Apply charges in one pipelined round trip (plus one for uncached tags), each at most once.
        Returns how many settlements were charged, now or by an earlier attempt (a deleted
        identity's are dropped, as MemoryStore does)."""
        tags, missing = self.records.cached_tags(charge.identity_id for charge in charges)
        if missing:
            tags.update((yield from self.records.looked_up(missing)))
            charges = [charge for charge in charges if charge.identity_id in tags]
            if not charges:
                return 0
        leasing = self.leasing
        if leasing is None:  # no lease arguments to build, no lease replies to apply
            return (yield from self._settle(charges, tags, None, None))
        leased = [leasing.lease_settle_args(tags[charge.identity_id], charge.leased) for charge in charges]
        asks = [ask for ask, _ in leased]
        try:
            return (yield from self._settle(charges, tags, [args for _, args in leased], asks))
        except BaseException:  # no answer: the lease calls may be made again
            leasing.lease_failed(asks)
            raise

    def _settle(self, charges: Sequence[Charge], tags: dict[str, str], lease_args: Sequence[Sequence[str | int]] | None,
                asks: Sequence[Ask | None] | None) -> Plan[int]:
        if lease_args is None:
            lease_args = [_NO_LEASE] * len(charges)
        steps = [self._settle_eval(charge, tags[charge.identity_id], args)
                 for charge, args in zip(charges, lease_args, strict=True)]
        defs = self.registry.fresh_defs() if self.registry.global_budgets else {}
        identity_replies = None
        if defs is None:  # reload the registry in the same round trip as the identities' charges
            replies = yield Batch([*steps, self.registry.defs_call()])
            defs = self.registry.keep_defs(replies[-1])
            identity_replies, steps = replies[:len(charges)], []
        scoped: list[tuple[ScopedBudget, str | None, datetime]] = []
        for charge in charges if defs else ():
            cached = self.records.cached(tags[charge.identity_id])
            external_id = cached[1].external_id if cached is not None else None
            now = charge.now
            settles = self.globals.scoped_settles(charge.id, external_id, charge.usage, charge.scoped, now, defs,
                                                  charge.charged)
            for budget, call in settles:
                steps.append(call)
                scoped.append((budget, external_id, now))
        if len(steps) == 1 and identity_replies is None:  # one charge alone: a plain script call
            replies = [(yield steps[0])]
        else:
            replies = (yield Batch(steps)) if steps else []
        if identity_replies is not None:
            replies = [*identity_replies, *replies]
        if asks is not None and self.leasing is not None:
            applied = self.leasing.lease_settle_reply
            replies = [*(applied(ask, reply) for ask, reply in zip(asks, replies, strict=False)),
                       *replies[len(charges):]]
        events = [event for charge, reply in zip(charges, replies, strict=False)
                  for event in self.globals.identity_fired(reply, charge.now)]
        events += [event for (budget, external_id, now), reply in zip(scoped, replies[len(charges):], strict=True)
                   for event in self.globals.fired(budget, reply, now, external_id)]
        notify = self.registry.notify
        if events and notify is not None:
            notify(events)
        return sum(charge.count for reply, charge in zip(replies[:len(charges)], charges, strict=True)
                   if int(reply[0] if isinstance(reply, list) else reply))

    def _settle_eval(self, charge: Charge, tag: str, lease_args: Sequence[str | int]) -> Eval:
        usage = charge.usage
        window = charge.window
        previous = self._previous_day
        if previous is None or previous[0] is not window:  # once per window, not per charge
            since = identity_span(window.start)  # the previous UTC day's start: forecasts rate the spend since
            previous = self._previous_day = (window, f" {codec.ms(since)}", since.date(), {})
        day_keys = previous[3]
        day_key = day_keys.get(tag)
        if day_key is None:
            if len(day_keys) >= _DAY_KEYS:
                day_keys.clear()
            key = self.records.keys.day(tag, previous[2])
            day_key = day_keys[tag] = (key, codec.packed(key))
        instants = f"{window.expire_at} {codec.ms(charge.now)}{previous[1]}"
        args: list[str | int] = [charge.identity_id, usage.cost, usage.input_tokens, usage.output_tokens, charge.count,
                                 charge.errors, instants, " ".join(charge.held), self.records.settle_id_ttl,
                                 *lease_args]
        args += codec.day_increments(usage)
        return self.records.marked_eval(SETTLE, tag, window, args, charge.id, after=(day_key,))
