"""The what-if check (orq's ``POST /v2/budgets/check``): would a request be admitted, which budget
would refuse it, what remains per dimension. Decided by :func:`.scoped.decide_scoped`, as admission
is, over the same states; a store computes them without writing anything."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from .admission import AdmissionRequest
from .budgets import ScopedBudget, ScopeKind, matches_request, matching_targets
from .matching import MatchIndex, variables_of
from .money import from_nanos
from .scoped import ScopedState, decide_scoped

__all__ = ["BudgetCheck", "CheckRequest", "DimensionInfo", "Rejection", "check_matching", "checked"]


@dataclass(frozen=True, slots=True)
class CheckRequest:
    """What a check asks about: orq's request fields, each optional, and the estimate (nano-USD)
    the request would reserve. ``metadata``, when given, stands for the identity's own."""

    identity: str | None = None
    model: str | None = None
    provider: str | None = None
    project: str | None = None
    api_key: str | None = None
    metadata: Mapping[str, Any] | None = None
    headers: Mapping[str, str] | None = field(default=None)
    estimate: int = 0

    def as_admission(self) -> AdmissionRequest:
        """The admission this check asks about (the model prefixed with the provider when both are given)."""
        model = self.model
        if model and self.provider and "/" not in model:
            model = f"{self.provider}/{model}"
        headers = {name.lower(): value for name, value in self.headers.items()} if self.headers else None
        return AdmissionRequest(self.identity or "", estimate=self.estimate, model=model, project=self.project,
                                api_key=self.api_key, headers=headers)


@dataclass(frozen=True, slots=True)
class DimensionInfo:
    """One dimension of the tightest budget: its limit, what is consumed (reservations included for
    cost) and what remains (never below 0). Cost is USD; tokens and requests (per minute) counts."""

    limit: Decimal | int
    consumed: Decimal | int
    remaining: Decimal | int


@dataclass(frozen=True, slots=True)
class Rejection:
    """The budget that would refuse the request (the one a 429 would name)."""

    scope_kind: str
    scope_target_id: str
    dimension: str  # cost | tokens | requests
    code: str
    message: str
    budget_id: str


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    allowed: bool
    rejection: Rejection | None = None
    cost: DimensionInfo | None = None
    tokens: DimensionInfo | None = None
    requests: DimensionInfo | None = None


def check_matching(budgets: list[ScopedBudget], check: CheckRequest, index: MatchIndex,
                   providers: Mapping[str, str], now: datetime) -> list[ScopedBudget]:
    """Of ``budgets`` (no identity budgets), the live ones the checked request falls under."""
    request = check.as_admission()
    targets = matching_targets(request.model, providers)
    if check.provider:  # a provider given alone still selects its provider budgets
        targets[ScopeKind.PROVIDER].add(check.provider)
    matched = None
    if index:
        variables = variables_of(request, None, providers, check.metadata or {})
        if check.provider:
            variables["provider"] = check.provider
        matched = index.evaluated(variables)
    return [budget for budget in budgets if budget.live(now) and matches_request(
        budget, check.identity, targets, check.project, check.api_key, matched)]


def checked(states: list[ScopedState], estimate: int, now: datetime) -> BudgetCheck:
    """The answer for a request with these budgets' states (admission's decision, nothing written)."""
    block = decide_scoped(states, estimate, now)
    rejection = None
    if block is not None:
        state = next(state for state in states if state.budget.id == block.budget_id)
        dimension = _dimension(state, estimate)
        budget = state.budget
        rejection = Rejection(
            scope_kind=budget.scope.value, scope_target_id=budget.target or budget.match or "",
            dimension=dimension, code="budget_exceeded", budget_id=budget.id,
            message=f"The {budget.period.value} {budget.scope.value} budget {budget.id} would refuse this request "
                    f"({dimension}).")
    return BudgetCheck(allowed=block is None, rejection=rejection, cost=_cost(states), tokens=_tokens(states),
                       requests=_requests(states))


def _dimension(state: ScopedState, estimate: int) -> str:
    limit = state.limit
    used = state.spent + state.reserved
    if limit is not None and (used >= limit or (estimate > 0 and used + estimate > limit)):
        return "cost"
    if state.budget.token_limit is not None and state.tokens >= state.budget.token_limit:
        return "tokens"
    return "requests"


def _cost(states: list[ScopedState]) -> DimensionInfo | None:
    limited = [state for state in states if state.limit is not None]
    if not limited:
        return None
    tightest = min(limited, key=lambda state: (state.limit or 0) - state.spent - state.reserved)
    limit = tightest.limit or 0
    consumed = tightest.spent + tightest.reserved
    return DimensionInfo(from_nanos(limit), from_nanos(consumed), from_nanos(max(limit - consumed, 0)))


def _tokens(states: list[ScopedState]) -> DimensionInfo | None:
    limited = [(state.budget.token_limit, state.tokens) for state in states if state.budget.token_limit is not None]
    if not limited:
        return None
    limit, used = min(limited, key=lambda pair: pair[0] - pair[1])
    return DimensionInfo(limit, used, max(limit - used, 0))


def _requests(states: list[ScopedState]) -> DimensionInfo | None:
    limited = [(state.budget.requests_per_minute, state.requests) for state in states
               if state.budget.requests_per_minute is not None]
    if not limited:
        return None
    limit, used = min(limited, key=lambda pair: pair[0] - pair[1])
    return DimensionInfo(limit, used, max(limit - used, 0))
