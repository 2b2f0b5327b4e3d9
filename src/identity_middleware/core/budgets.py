"""Scoped budgets (orq's Budgets API): who a budget covers, its limits, alerts, and which requests it matches."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_serializer, field_validator, model_validator

from .forecast import Forecast
from .ids import new_ulid
from .money import format_usd, limit_amount, to_decimal, to_nanos
from .periods import Period, period_bounds, period_key

__all__ = [
    "Alert",
    "BudgetChanges",
    "BudgetExists",
    "BudgetNotFound",
    "BudgetOrder",
    "BudgetPeriod",
    "BudgetSpec",
    "BudgetUsage",
    "Dimension",
    "ForecastAlert",
    "InvalidBudget",
    "ScopeKind",
    "ScopedBudget",
    "ScopedBudgetPage",
    "canonical_budget_id",
    "identity_budget_id",
    "matches_request",
    "matching_targets",
    "provider_of",
]

MAX_TOKEN_LIMIT = 10**15
MAX_MATCH_LENGTH = 4096  # characters of a CEL expression


class ScopeKind(str, enum.Enum):
    """Who a budget covers: one identity, one model, one provider, one project, one API key, the
    whole app (workspace), or the requests a CEL expression matches (``match``: orq's dynamic
    budgets, e.g. a team's ``metadata.team == "ml"``)."""

    IDENTITY = "identity"
    MODEL = "model"
    PROVIDER = "provider"
    WORKSPACE = "workspace"
    PROJECT = "project"
    API_KEY = "api_key"
    MATCH = "match"

    def __str__(self) -> str:
        return self.value


class BudgetPeriod(str, enum.Enum):
    """A calendar :class:`Period`, or ``one_time``: a budget that never resets by itself."""

    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    YEARLY = "yearly"
    ONE_TIME = "one_time"

    def __str__(self) -> str:
        return self.value

    @property
    def calendar(self) -> Period | None:
        return CALENDAR.get(self)



# Looked up per request and per budget: a dict of members, no enum call by value.
CALENDAR: Mapping[BudgetPeriod, Period] = {BudgetPeriod(period.value): period for period in Period}


class Dimension(str, enum.Enum):
    COST = "cost"
    TOKENS = "tokens"


class BudgetOrder(str, enum.Enum):
    """The orders a list of budgets may take (orq's ``BudgetSortField``). ``id`` (ascending) is the
    default; ``created_at`` and ``updated_at`` are the newest first, ``expires_at`` the soonest first
    (budgets that never expire last). Ties go by id, so every order is total and cursors are stable."""

    ID = "id"
    CREATED_AT = "created_at"
    UPDATED_AT = "updated_at"
    EXPIRES_AT = "expires_at"


class BudgetNotFound(LookupError):
    """No budget has this id."""


class BudgetExists(Exception):
    """A budget for this (scope kind, target, period) exists already; ``args[0]`` is its id."""


class InvalidBudget(ValueError):
    """A budget that cannot be stored; ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class Alert(BaseModel):
    """Notify ``notifier_ids`` once per period when consumption reaches ``threshold_percent``."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=lambda: new_ulid())
    threshold_percent: int = Field(ge=1, le=100)
    notifier_ids: tuple[str, ...] = ()
    dimension: Dimension = Dimension.COST

    @field_validator("dimension")
    @classmethod
    def _cost_only(cls, dimension: Dimension, info: ValidationInfo) -> Dimension:
        # orq's rule ("A TOKENS alert is rejected"): alerts watch cost; a token limit still blocks.
        # A budget an earlier version stored with one keeps it (its record is read as written).
        if dimension is Dimension.TOKENS and info.context != _RECORD:
            raise ValueError("a TOKENS alert is rejected: alerts watch cost (a token limit still blocks)")
        return dimension


class ForecastAlert(BaseModel):
    """Our extension: notify ``notifier_ids`` once per period when the budget is forecast to run out
    before its period ends (:mod:`.forecast`; a one-time budget: within a year)."""

    model_config = ConfigDict(frozen=True)

    notifier_ids: tuple[str, ...] = ()


def _amount(value: object, info: ValidationInfo) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, str) and info.context == _RECORD:
        # Our own record: written in plain notation (see BudgetSpec._plain_amount), or by an older
        # version as str(Decimal) ("1E-9"), which the API's text pattern refuses.
        value = to_decimal(value)
    return limit_amount(value)


_RECORD = {"record": True}  # the validation context of a stored budget read back


def _match(value: str | None) -> str | None:
    """A match budget's CEL expression, parsed by the CEL library (loaded only when one is given)."""
    if value is None:
        return None
    if not value.strip() or len(value) > MAX_MATCH_LENGTH:
        raise ValueError(f"a CEL expression of 1..{MAX_MATCH_LENGTH} characters")
    from .cel import InvalidExpression, compiled

    try:
        compiled(value)
    except InvalidExpression as error:
        raise ValueError(str(error)) from None
    return value


class BudgetChanges(BaseModel):
    """What an update may change; fields not given stay (``clear_*`` removes an optional one)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    period: BudgetPeriod | None = None
    amount: Decimal | None = None
    token_limit: int | None = Field(default=None, ge=1, le=MAX_TOKEN_LIMIT)
    requests_per_minute: int | None = Field(default=None, ge=1)
    is_active: bool | None = None
    expires_at: datetime | None = None
    alerts: tuple[Alert, ...] | None = None
    match: str | None = None  # a match budget's new CEL expression
    forecast_alert: ForecastAlert | None = None
    clear_expires_at: bool = False
    clear_alerts: bool = False
    clear_forecast_alert: bool = False

    _check_amount = field_validator("amount", mode="before")(classmethod(lambda cls, v, info: _amount(v, info)))
    _check_match = field_validator("match")(classmethod(lambda cls, v: _match(v)))

    def given(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.model_fields_set
                if name not in ("clear_expires_at", "clear_alerts", "clear_forecast_alert")}


class BudgetSpec(BaseModel):
    """A budget to create: its scope (``target`` is None for the workspace), limits, alerts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scope: ScopeKind
    target: str | None = None
    period: BudgetPeriod = BudgetPeriod.MONTHLY
    amount: Decimal | None = None
    token_limit: int | None = Field(default=None, ge=1, le=MAX_TOKEN_LIMIT)
    requests_per_minute: int | None = Field(default=None, ge=1)
    is_active: bool = True
    expires_at: datetime | None = None
    alerts: tuple[Alert, ...] = ()
    match: str | None = None  # the CEL expression of a ``match`` budget (which has no target)
    forecast_alert: ForecastAlert | None = None

    _check_amount = field_validator("amount", mode="before")(classmethod(lambda cls, v, info: _amount(v, info)))

    @field_serializer("amount", when_used="json")
    def _plain_amount(self, amount: Decimal | None) -> str | None:
        # Plain notation, as the amount's text pattern requires: str(Decimal) writes 1E-9.
        return None if amount is None else format_usd(amount)

    _check_match = field_validator("match")(classmethod(lambda cls, v: _match(v)))

    @model_validator(mode="after")
    def _scope_and_limits(self) -> BudgetSpec:
        if self.scope is ScopeKind.MATCH:
            if self.match is None:
                raise ValueError("a match budget needs its CEL expression (match.cel)")
            if self.target not in (None, ""):
                raise ValueError("a match budget has no target: its expression says which requests it covers")
            object.__setattr__(self, "target", None)
        elif self.match is not None:
            raise ValueError(f"a {self.scope.value} budget has no match expression: its scope says what it covers")
        elif self.scope is ScopeKind.WORKSPACE:
            if self.target not in (None, ""):
                raise ValueError("a workspace budget has no target")
            object.__setattr__(self, "target", None)
        elif not self.target or len(self.target) > 255:
            raise ValueError(f"a {self.scope.value} budget needs its target (1..255 characters)")
        if self.amount is None and self.token_limit is None and self.requests_per_minute is None:
            raise ValueError("give at least one of amount, token_limit or rate_limit.requests_per_minute")
        return self

    @cached_property
    def amount_nanos(self) -> int | None:
        """``amount`` in nano-USD (computed once: admission reads it on every request)."""
        return None if self.amount is None else to_nanos(self.amount)

    @property
    def key(self) -> tuple[str, str, str]:
        """The uniqueness key: one budget per (scope kind, target, period); a match budget's
        target is its expression, character for character."""
        return (self.scope.value, self.match or self.target or "", self.period.value)


class ScopedBudget(BudgetSpec):
    """A stored budget. ``id`` is opaque; identity budgets' ids name their identity (see :func:`identity_budget_id`)."""

    id: str
    created_at: datetime
    updated_at: datetime

    def live(self, now: datetime) -> bool:
        """Enforced now: active and not expired."""
        return self.is_active and (self.expires_at is None or now < self.expires_at)

    def changed(self, changes: BudgetChanges, now: datetime) -> ScopedBudget:
        """This budget with ``changes`` applied (validated again as a whole)."""
        data = self.model_dump()
        data.update(changes.given())
        if changes.clear_expires_at:
            data["expires_at"] = None
        if changes.clear_alerts:
            data["alerts"] = ()
        if changes.clear_forecast_alert:
            data["forecast_alert"] = None
        if "period" in changes.given() and changes.period is not self.period:
            raise ValueError("the period of a budget cannot change; create another budget")
        if changes.match is not None and self.scope is not ScopeKind.MATCH:
            raise ValueError(f"match: the scope of a {self.scope.value} budget cannot change; only a match "
                             "budget's expression can")
        data["updated_at"] = now
        # Read as a record: the alerts it keeps were checked when written (or are an earlier
        # version's token alerts, which stay); new ones were checked in ``changes``.
        return ScopedBudget.model_validate(data, context=_RECORD)

    def to_record(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_record(cls, text: str | bytes) -> ScopedBudget:
        return cls.model_validate_json(text, context=_RECORD)


@dataclass(frozen=True, slots=True)
class BudgetUsage:
    """Consumption of a budget: cost (USD) and tokens this period, requests in the last 60 s, and
    (our extension) its :class:`~identity_middleware.core.forecast.Forecast`."""

    amount: Decimal = Decimal(0)
    tokens: int = 0
    requests: int = 0
    forecast: Forecast | None = None


@dataclass(frozen=True, slots=True)
class ScopedBudgetPage:
    data: list[tuple[ScopedBudget, BudgetUsage]]
    has_more: bool


def identity_budget_id(identity_ulid: str, period: BudgetPeriod | str) -> str:
    """An identity budget's id names the identity's ULID, so a store finds it without an index."""
    return f"bi_{identity_ulid}_{BudgetPeriod(period).value}"


def parse_identity_budget_id(budget_id: str) -> tuple[str, BudgetPeriod] | None:
    """The identity ULID and period of ``bi_<ULID>_<period>``, or of ``<ULID>.<period>`` (the id an
    identity's ``budget`` showed in earlier versions: still read, never written)."""
    if budget_id.startswith("bi_"):
        ulid, _, period = budget_id[3:].partition("_")
    else:
        ulid, dot, period = budget_id.partition(".")
        if not dot or len(ulid) != 26:
            return None
    try:
        return ulid, BudgetPeriod(period)
    except ValueError:
        return None


def canonical_budget_id(budget_id: str) -> str:
    """``budget_id`` as stores write it: an identity budget's older ``<ULID>.<period>`` form as
    ``bi_<ULID>_<period>``; any other id unchanged."""
    if budget_id.startswith("bi_"):
        return budget_id
    parsed = parse_identity_budget_id(budget_id)
    return budget_id if parsed is None else identity_budget_id(*parsed)


def provider_of(model: str, providers: Mapping[str, str] | None = None) -> str | None:
    """``openai`` for ``openai/gpt-4o``; else the configured map's entry for the bare name."""
    head, slash, _ = model.partition("/")
    if slash and head:
        return head
    return (providers or {}).get(model)


def matching_targets(model: str | None, providers: Mapping[str, str] | None = None) -> dict[ScopeKind, set[str]]:
    """The model and provider budget targets a request for ``model`` matches.

    A model budget ``openai/gpt-4o`` matches a request for ``openai/gpt-4o`` and one for ``gpt-4o``
    whose provider is ``openai``; a budget named ``gpt-4o`` matches either too.
    """
    if not model:
        return {ScopeKind.MODEL: set(), ScopeKind.PROVIDER: set()}
    provider = provider_of(model, providers)
    bare = model.partition("/")[2] if "/" in model else model
    models = {model, bare}
    if provider:
        models.add(f"{provider}/{bare}")
    return {ScopeKind.MODEL: models, ScopeKind.PROVIDER: {provider} if provider else set()}


def matches_request(budget: ScopedBudget, identity: str | None, targets: dict[ScopeKind, set[str]],
                    project: str | None = None, api_key: str | None = None,
                    matched: frozenset[str] | None = None) -> bool:
    """Whether ``budget`` covers a request of ``identity`` for the model ``targets`` were made
    for, in ``project`` with ``api_key``; ``matched`` are the ids of the match budgets whose
    expression holds for it (:mod:`.matching`)."""
    scope = budget.scope
    if scope is ScopeKind.WORKSPACE:
        return True
    if scope is ScopeKind.IDENTITY:
        return identity is not None and budget.target == identity
    if scope is ScopeKind.PROJECT:
        return project is not None and budget.target == project
    if scope is ScopeKind.API_KEY:
        return api_key is not None and budget.target == api_key
    if scope is ScopeKind.MATCH:
        return matched is not None and budget.id in matched
    return budget.target in targets[scope]


#: The scopes whose budgets a request matches by what the app declares of it, not by its identity
#: or its usage: settlement charges the ones its admission matched (``Admission.charged``).
BY_REQUEST = frozenset({ScopeKind.PROJECT, ScopeKind.API_KEY, ScopeKind.MATCH})


def budget_bounds(budget: BudgetSpec, now: datetime, tz: Any) -> tuple[str, datetime | None, datetime | None]:
    """The budget's current period: its key, start and end (one-time: ``"one_time"``, no bounds)."""
    calendar = budget.period.calendar
    if calendar is None:
        return "one_time", None, None
    start, end = period_bounds(calendar, now, tz)
    return period_key(calendar, now, tz), start, end
