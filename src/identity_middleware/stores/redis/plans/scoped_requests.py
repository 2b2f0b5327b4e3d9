"""Plans of the Budgets API on Redis over :mod:`.scoped`: reads, changes, and the request path's share."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from ....core.admission import Admission, AdmissionRequest, Reservation, Usage
from ....core.budgets import (
    BudgetChanges,
    BudgetUsage,
    Dimension,
    ScopedBudget,
    ScopedBudgetPage,
    ScopeKind,
    budget_bounds,
    matches_request,
    matching_targets,
)
from ....core.models import Identity
from ....core.money import from_nanos, to_nanos
from ....core.scoped import ScopedState, decide_scoped, threshold_event
from ...base import check_limit
from ...scoped import Notify, page_of
from ..keys import identity_tag
from ..steps import Batch, Call, Eval, Plan
from . import codec
from .scoped import ScopedPlans, alert_thresholds

_DIMENSIONS = {"c": Dimension.COST, "t": Dimension.TOKENS}


def _limit_args(budget: ScopedBudget) -> list[str | int]:
    return [to_nanos(budget.amount) if budget.amount is not None else "",
            budget.token_limit if budget.token_limit is not None else ""]


def _expire_at(end: datetime | None) -> int:
    return 0 if end is None else math.ceil((end + timedelta(days=1)).timestamp())


class ScopedRequestPlans(ScopedPlans):
    providers: dict[str, str] = {}
    notify: Notify | None = None

    def retrieve_budget(self, budget_id: str) -> Plan[ScopedBudget]:
        return (yield from self.locate(budget_id))[0]

    def update_budget(self, budget_id: str, changes: BudgetChanges) -> Plan[ScopedBudget]:
        budget, tag = yield from self.locate(budget_id)
        budget = budget.changed(changes, codec.now_or(None))
        yield from self.save(budget, tag)
        return budget

    def delete_budget(self, budget_id: str) -> Plan[None]:
        budget, tag = yield from self.locate(budget_id)
        yield from self.remove(budget, tag)

    def _usage_step(self, budget: ScopedBudget, now: datetime) -> Eval | None:
        if budget.scope is ScopeKind.IDENTITY:
            return None
        return self.scoped_eval(budget, "state", now, [codec.ms(now)])

    def _usages(self, budgets: Sequence[ScopedBudget], now: datetime) -> Plan[list[BudgetUsage]]:
        steps: list[Call | Eval] = []
        for budget in budgets:
            step: Call | Eval | None = self._usage_step(budget, now)
            if step is None:
                tags = yield from self.tags_of([budget.id[3:].partition("_")[0]])
                tag = next(iter(tags.values()), None)
                step = self.identity_state(tag, now) if tag is not None else Call("exists", ("-",))
            steps.append(step)
        replies = (yield Batch(steps)) if steps else []
        usages = []
        for budget, reply in zip(budgets, replies, strict=True):
            if budget.scope is ScopeKind.IDENTITY:
                rows = [row for row in codec.rows(reply if isinstance(reply, list) else [])
                        if row.period == budget.period.value]
                usages.append(BudgetUsage(from_nanos(rows[0].spent), rows[0].tokens, rows[0].requests) if rows
                              else BudgetUsage())
            else:
                usages.append(BudgetUsage(from_nanos(int(reply[0])), int(reply[2]), int(reply[3])))
        return usages

    def budget_usage(self, budget_id: str) -> Plan[BudgetUsage]:
        budget, _ = yield from self.locate(budget_id)
        return (yield from self._usages([budget], codec.now_or(None)))[0]

    def reset_budget_consumption(self, budget_id: str) -> Plan[None]:
        budget, tag = yield from self.locate(budget_id)
        now = codec.now_or(None)
        if tag is None:
            yield self.scoped_eval(budget, "reset", now, [])
        else:
            yield Call("delete", tuple(self.identity_counters(tag, budget.period.value, now)))

    def list_budgets(self, limit: int, starting_after: str | None, ending_before: str | None,
                     scope_kinds: Sequence[str] | None, target: str | None, is_active: bool | None,
                     periods: Sequence[str] | None, query: str | None) -> Plan[ScopedBudgetPage]:
        check_limit(limit)
        with_identities = not scope_kinds or ScopeKind.IDENTITY.value in scope_kinds
        budgets = yield from self.all_budgets(target, with_identities)
        page, more = page_of(budgets, limit, starting_after, ending_before, scope_kinds, target, is_active,
                             periods, query)
        usages = yield from self._usages(page, codec.now_or(None))
        return ScopedBudgetPage(list(zip(page, usages, strict=True)), more)

    # -- the request path ----------------------------------------------------------------------------
    def matching_globals(self, identity: str | None, model: str | None, now: datetime) -> Plan[list[ScopedBudget]]:
        defs = yield from self.global_defs()
        if not defs:
            return []
        targets = matching_targets(model, self.providers)
        return [b for b in defs.values() if b.live(now) and matches_request(b, identity, targets)]

    def scoped_admission(self, admission: Admission, request: AdmissionRequest, now: datetime) -> Plan[Admission]:
        """After the identity's script admitted: check and reserve each matching global budget
        (one pipelined round trip, each budget atomic in its own slot); if one blocks, undo."""
        identity = admission.identity
        assert identity is not None
        if not self.global_budgets:
            return admission
        budgets = yield from self.matching_globals(identity.external_id, request.model, now)
        if not budgets:
            return admission
        reservation_id = admission.reservation.id if admission.reservation is not None else (
            uuid.uuid4().hex if request.estimate > 0 else "")
        member = f"{request.estimate}:{reservation_id}" if reservation_id else ""
        expires = now + timedelta(seconds=self.reservation_ttl)
        steps: list[Call | Eval] = []
        for budget in budgets:
            held = member if budget.amount is not None else ""
            steps.append(self.scoped_eval(budget, "admit", now, [
                codec.ms(now), *_limit_args(budget),
                budget.requests_per_minute if budget.requests_per_minute is not None else "",
                request.estimate, held, codec.ms(expires), 70]))
        replies = yield Batch(steps)
        states = []
        for budget, reply in zip(budgets, replies, strict=True):
            _, start, end = budget_bounds(budget, now, self.tz)
            states.append(ScopedState(budget, int(reply[1]), int(reply[2]), int(reply[3]), int(reply[4]), start, end))
        held_ids = tuple(b.id for b, r in zip(budgets, replies, strict=True) if not r[0] and member and b.amount)
        if not any(reply[0] for reply in replies):
            if not held_ids:
                return admission
            base = admission.reservation
            return Admission(identity, None, Reservation(
                reservation_id, identity.id, request.estimate, expires, base.periods if base else (), held_ids))
        undo: list[Call | Eval] = [self.scoped_eval(b, "release", now, [member]) for b in budgets if b.id in held_ids]
        tag = self._tag_of(identity)
        if admission.reservation is not None:
            undo += [Call("zrem", (self.keys.reservations(tag, p), member)) for p in admission.reservation.periods]
        undo.append(self._write("admit", identity.external_id, {}, now, refused=2, tag=tag, known="x"))
        yield Batch(undo)  # counted as a request and an error, no longer as an admission of its identity's budgets
        block = decide_scoped(states, request.estimate, now)
        return Admission(identity, block)

    def _tag_of(self, identity: Identity) -> str:
        return identity_tag(identity.external_id)

    def scoped_settles(self, charge_id: str, external_id: str | None, usage: Usage, reservations: Sequence[Reservation],
                       now: datetime, defs: dict[str, ScopedBudget]) -> list[tuple[ScopedBudget, Eval]]:
        """One settle call per global budget this charge's usage (summed) matches or one of its
        ``reservations`` holds."""
        shares: dict[str, list[int]] = {}
        releases: dict[str, list[str]] = {}
        for budget in defs.values():
            if budget.scope is ScopeKind.WORKSPACE:
                shares[budget.id] = [usage.cost, usage.input_tokens + usage.output_tokens]
        for model, part in usage.models.items():
            targets = matching_targets(model, self.providers)
            for budget in defs.values():
                if budget.scope in (ScopeKind.MODEL, ScopeKind.PROVIDER) and budget.target in targets[budget.scope]:
                    share = shares.setdefault(budget.id, [0, 0])
                    share[0] += part.cost
                    share[1] += part.input_tokens + part.output_tokens
        for reservation in reservations:
            for budget_id in reservation.budgets:
                releases.setdefault(budget_id, []).append(f"{reservation.amount}:{reservation.id}")
        calls = []
        for budget_id in sorted({*shares, *releases}):  # a set: sorted, so a batch is the same each run
            found = defs.get(budget_id)
            if found is None:
                continue
            budget = found
            cost, tokens = shares.get(budget_id, [0, 0])
            _, _, end = budget_bounds(budget, now, self.tz)
            alerts = " ".join(f"{percent}:{dim}:{threshold}" for percent, dim, threshold in alert_thresholds(budget))
            marker = self.keys.scoped(budget_id, f"c:{charge_id}")
            calls.append((budget, self.scoped_eval(budget, "settle", now, [
                cost, tokens, " ".join(releases.get(budget_id, ())), _expire_at(end), self.settle_id_ttl,
                *_limit_args(budget), alerts, _expire_at(end)], fourth=marker)))
        return calls

    def identity_fired(self, reply: Any, now: datetime) -> list[dict[str, Any]]:
        """The alerts a settle script call fired on the identity's own budgets (see settle.lua)."""
        if not isinstance(reply, list) or len(reply) < 2:
            return []
        external_id, events = str(reply[1]), []
        for at in range(2, len(reply), 6):
            _, percent, dim, cost, tokens, definition = reply[at:at + 6]
            if definition:
                budget = ScopedBudget.from_record(definition)
                _, start, end = budget_bounds(budget, now, self.tz)
                events.append(threshold_event(budget, int(percent), _DIMENSIONS[str(dim)], (int(cost), int(tokens)),
                                              start, end, external_id))
        return events

    def fired(self, budget: ScopedBudget, reply: Any, now: datetime, identity: str | None) -> list[dict[str, Any]]:
        if not reply or not int(reply[0]) or len(reply) <= 3:
            return []
        _, start, end = budget_bounds(budget, now, self.tz)
        consumed = (int(reply[1]), int(reply[2]))
        events = []
        for text in reply[3:]:
            percent, _, dim = str(text).partition(":")
            events.append(threshold_event(budget, int(percent), _DIMENSIONS[dim], consumed, start, end, identity))
        return events
