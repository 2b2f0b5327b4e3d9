"""The request path's share of model, provider, workspace, project, API-key and match budgets: reserve after
the identity's script admitted (one pipelined round trip, each budget atomic in its own slot), charge at settlement,
and the threshold alerts either fires."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from ....core.admission import Admission, AdmissionRequest, Consumed, Reservation, Usage
from ....core.budgets import BY_REQUEST, Dimension, ScopedBudget, ScopeKind, budget_bounds, matching_targets
from ....core.check import BudgetCheck, CheckRequest, check_matching, checked
from ....core.errors import IdentityNotFound
from ....core.forecast import HORIZON, scoped_span
from ....core.scoped import (
    ScopedState,
    budget_forecast,
    decide_scoped,
    forecast_event,
    forecast_watched,
    threshold_event,
)
from ..keys import identity_tag
from ..steps import Batch, Call, Eval, Plan
from . import codec
from .records import Records
from .registry import Registry

_DIMENSIONS = {"c": Dimension.COST, "t": Dimension.TOKENS}


class GlobalBudgets:
    """Global budgets on the request path, over the records and the registry."""

    def __init__(self, records: Records, registry: Registry) -> None:
        self.records = records
        self.registry = registry
        self.keys = records.keys

    def scoped_admission(self, admission: Admission, request: AdmissionRequest, now: datetime) -> Plan[Admission]:
        """After the identity's script admitted: check and reserve each matching global budget
        (one pipelined round trip, each budget atomic in its own slot); if one blocks, undo."""
        identity = admission.identity
        assert identity is not None
        if not self.registry.global_budgets:
            return admission
        budgets = yield from self.registry.matching_globals(identity, request, now)
        if not budgets:
            return admission
        charged = tuple(budget.id for budget in budgets if budget.scope in BY_REQUEST)
        reservation_id = admission.reservation.id if admission.reservation is not None else (
            uuid.uuid4().hex if request.estimate > 0 else "")
        member = f"{request.estimate}:{reservation_id}" if reservation_id else ""
        expires = now + timedelta(seconds=self.records.reservation_ttl)
        steps: list[Call | Eval] = []
        for budget in budgets:
            held = member if budget.amount is not None else ""
            steps.append(self.registry.scoped_eval(budget, "admit", now, [
                codec.ms(now), *codec.limit_args(budget),
                budget.requests_per_minute if budget.requests_per_minute is not None else "",
                request.estimate, held, codec.ms(expires), 70]))
        replies = yield Batch(steps)
        states = []
        for budget, reply in zip(budgets, replies, strict=True):
            _, start, end = budget_bounds(budget, now, self.records.tz)
            states.append(ScopedState(budget, int(reply[1]), int(reply[2]), int(reply[3]), int(reply[4]), start, end))
        held_ids = tuple(b.id for b, r in zip(budgets, replies, strict=True) if not r[0] and member and b.amount)
        if not any(reply[0] for reply in replies):
            if request.consumed:  # steering: these budgets' figures too, before this request
                admission.consumed += tuple(
                    Consumed(state.budget.id, state.spent + state.reserved, limit, state.end, state.start)
                    for state in states if (limit := state.limit) is not None)
            admission.charged = charged
            if not held_ids:
                return admission
            base = admission.reservation
            admission.reservation = Reservation(
                reservation_id, identity.id, request.estimate, expires, base.periods if base else (), held_ids)
            return admission
        release = self.registry.scoped_eval
        undo: list[Call | Eval] = [release(b, "release", now, [member]) for b in budgets if b.id in held_ids]
        tag = identity_tag(identity.external_id)
        if admission.reservation is not None:
            undo += [Call("zrem", (self.keys.reservations(tag, p), member)) for p in admission.reservation.periods]
        undo.append(self.records.write("admit", identity.external_id, {}, now, refused=2, tag=tag, known="x"))
        yield Batch(undo)  # counted as a request and an error, no longer as an admission of its identity's budgets
        block = decide_scoped(states, request.estimate, now)
        return Admission(identity, block)

    def check(self, request: CheckRequest, now: datetime) -> Plan[BudgetCheck]:
        """The what-if check: every budget ``request`` falls under, read (no reservation, no count),
        and admission's decision over them."""
        identity, tag = None, None
        if request.identity:
            with contextlib.suppress(IdentityNotFound):  # no identity: no identity budgets
                identity, tag = yield from self.records.fetch(request.identity)
        if identity is not None and request.metadata is None:
            request = dataclasses.replace(request, metadata=identity.metadata)
        defs = (yield from self.registry.global_defs()) if self.registry.global_budgets else {}
        budgets = check_matching(list(defs.values()), request, self.registry.index, self.registry.providers, now)
        steps: list[Call | Eval] = [self.registry.scoped_eval(budget, "state", now, [codec.ms(now)])
                                    for budget in budgets]
        if identity is not None and tag is not None:
            steps.append(self.records.state_eval(tag, now))
        replies = (yield Batch(steps)) if steps else []
        states = []
        for budget, reply in zip(budgets, replies, strict=False):
            _, start, end = budget_bounds(budget, now, self.records.tz)
            states.append(ScopedState(budget, int(reply[0]), int(reply[1]), int(reply[2]), int(reply[3]), start, end))
        if identity is not None:
            states += codec.scoped_states(codec.rows(replies[-1]), identity, now, self.records.tz)
        return checked(states, request.estimate, now)

    def scoped_settles(self, charge_id: str, external_id: str | None, usage: Usage, reservations: Sequence[Reservation],
                       now: datetime, defs: dict[str, ScopedBudget],
                       charged: Mapping[str, list[int]] | None = None) -> list[tuple[ScopedBudget, Eval]]:
        """One settle call per global budget this charge's usage (summed) matches or one of its
        ``reservations`` holds; ``charged``: the cost and tokens its requests owe the project,
        API-key and match budgets their admissions matched."""
        shares: dict[str, list[int]] = {budget_id: list(owed) for budget_id, owed in (charged or {}).items()}
        releases: dict[str, list[str]] = {}
        for budget in defs.values():
            if budget.scope is ScopeKind.WORKSPACE:
                shares[budget.id] = [usage.cost, usage.input_tokens + usage.output_tokens]
        for model, part in usage.models.items():
            targets = matching_targets(model, self.registry.providers)
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
            _, _, end = budget_bounds(budget, now, self.records.tz)
            alerts = " ".join(f"{percent}:{dim}:{threshold}"
                              for percent, dim, threshold in codec.alert_thresholds(budget))
            marker = self.keys.scoped(budget_id, f"c:{charge_id}")
            calls.append((budget, self.registry.scoped_eval(budget, "settle", now, [
                cost, tokens, " ".join(releases.get(budget_id, ())), codec.expire_at(end), self.records.settle_id_ttl,
                *codec.limit_args(budget), alerts, codec.expire_at(end), _forecast_args(budget, now, self.records.tz)],
                fourth=marker)))
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
                _, start, end = budget_bounds(budget, now, self.records.tz)
                if str(dim) == "f":  # the forecast alert: the identity's recent spend in the tokens' place
                    projected = budget_forecast(budget, int(cost), int(tokens), now, self.records.tz)
                    events.append(forecast_event(budget, projected, int(cost), start, end, external_id))
                    continue
                events.append(threshold_event(budget, int(percent), _DIMENSIONS[str(dim)], (int(cost), int(tokens)),
                                              start, end, external_id))
        return events

    def fired(self, budget: ScopedBudget, reply: Any, now: datetime, identity: str | None) -> list[dict[str, Any]]:
        if not reply or not int(reply[0]) or len(reply) <= 3:
            return []
        _, start, end = budget_bounds(budget, now, self.records.tz)
        consumed = (int(reply[1]), int(reply[2]))
        events = []
        for text in reply[3:]:
            percent, _, dim = str(text).partition(":")
            if dim == "f":
                projected = budget_forecast(budget, consumed[0], 0, now, self.records.tz)
                events.append(forecast_event(budget, projected, consumed[0], start, end, identity))
            else:
                events.append(threshold_event(budget, int(percent), _DIMENSIONS[dim], consumed, start, end, identity))
        return events


def _forecast_args(budget: ScopedBudget, now: datetime, tz: Any) -> str:
    """scoped.lua's forecast alert argument: "<now ms> <rate's start ms> <period end ms>", or ''."""
    if not forecast_watched(budget):
        return ""
    _, start, end = budget_bounds(budget, now, tz)
    return f"{codec.ms(now)} {codec.ms(scoped_span(start, budget.created_at, now))} {codec.ms(end or now + HORIZON)}"
