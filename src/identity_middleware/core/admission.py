"""The admission decision: given each budget's spend and reservations, may a request pass?

``Usage`` and ``ModelUsage`` live in :mod:`.usage`; they are named here too, as the request path's values."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from .budgets import BudgetPeriod
from .money import from_nanos
from .periods import PERIODS, Period
from .usage import ModelUsage, Usage

if TYPE_CHECKING:
    from .models import Budget, Identity, IdentityInput

__all__ = ["Admission", "AdmissionRequest", "BudgetBlock", "BudgetState", "Consumed", "ModelUsage", "Reservation",
           "Settlement", "Usage", "decide"]


@dataclass(frozen=True, slots=True)
class BudgetState:
    """One budget as the store sees it at admission time (all money in nano-USD)."""

    period: Period
    amount: int
    spent: int
    reserved: int
    period_start: datetime
    resets_at: datetime

    def blocks(self, estimate: int) -> bool:
        """``>=`` blocks at the limit; an estimate must also fit entirely."""
        used = self.spent + self.reserved
        return used >= self.amount or (estimate > 0 and used + estimate > self.amount)


@dataclass(frozen=True, slots=True)
class BudgetBlock:
    """Why a request was refused: the blocking budget that resets last."""

    period: Period | BudgetPeriod
    amount: Decimal
    spent: Decimal
    reserved: Decimal
    resets_at: datetime | None  # None: a one-time budget, which never resets
    retry_after: int
    budget_id: str | None = None
    scope: str | None = None
    token_limit: int | None = None  # set when the token limit blocks
    tokens: int = 0


def decide(states: list[BudgetState], estimate: int, now: datetime, identity_ulid: str | None = None
           ) -> BudgetBlock | None:
    """``None`` when every budget admits the request, else the block to report.

    When several budgets block, the request can pass only once all have reset, so the one that
    resets last is named and ``Retry-After`` waits for it (of those resetting at the same instant,
    as daily and monthly do on a month's last day, the longer period: not one that depends on the day).
    """
    blocking = [state for state in states if state.blocks(estimate)]
    if not blocking:
        return None
    last = max(blocking, key=lambda state: (state.resets_at, PERIODS.index(state.period)))
    wait = max(1, math.ceil((last.resets_at - now).total_seconds()))
    return BudgetBlock(
        period=last.period,
        amount=from_nanos(last.amount),
        spent=from_nanos(last.spent),
        reserved=from_nanos(last.reserved),
        resets_at=last.resets_at,
        retry_after=wait,
        budget_id=None if identity_ulid is None else f"bi_{identity_ulid}_{last.period.value}",
        scope=None if identity_ulid is None else "identity",
    )


@dataclass(slots=True)  # one per request: a frozen dataclass takes ~3x as long to build
class AdmissionRequest:
    """What the flow asks of a store for one request, answered in one atomic step.

    ``upsert`` is the body identity (create or partially update the record); otherwise a missing
    identity is created bare when ``create_missing``. ``default_budgets`` are set on an identity
    this admission creates. ``refused`` marks a request already refused (rate limited): the store
    upserts and counts it as a request and an error, and checks no budget. ``last_source``
    (``"body"``, ``"header"`` or ``"auth"``, from ``Resolved.source``) is kept on the record as
    ``Identity.last_source`` when given; it never moves ``updated``.
    """

    external_id: str
    upsert: IdentityInput | None = None
    create_missing: bool = True
    estimate: int = 0
    default_budgets: tuple[Budget, ...] = ()
    refused: bool = False
    now: datetime | None = None
    last_source: str | None = None
    model: str | None = None  # the JSON body's ``model``, for model and provider budgets
    # Steering (``degrade=``, ``budget_headers=``): report the budgets' figures in ``Admission.consumed``;
    # ``fallbacks``: smaller estimates (a degrade tier's each, in tier order) to admit with, the first
    # that fits, when ``estimate`` does not (``Admission.fallback`` says which).
    consumed: bool = False
    fallbacks: tuple[int, ...] = ()
    # What the app declares of the request (the ``project_from``/``api_key_from`` options), for
    # project and API-key budgets and match expressions; its headers (lowercase names) when a
    # match expression reads them.
    project: str | None = None
    api_key: str | None = None
    headers: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Consumed:
    """One budget with an amount as the admission found it, before this request's reservation
    (nano-USD): what ``degrade=`` tiers and ``budget_headers=`` read. ``key`` is the period
    (``daily`` .. ``yearly``, ``one_time``) of the identity's own budgets, the budget id of others."""

    key: str
    used: int  # spent + reserved
    amount: int
    resets_at: datetime | None  # None: a one-time budget
    period_start: datetime | None = None

    def share_at_least(self, share: Decimal) -> bool:
        """``used / amount >= share``, exactly."""
        return self.used >= share * self.amount


@dataclass(frozen=True, slots=True)
class Reservation:
    """An estimate held against every budget of an identity until the request settles."""

    id: str
    identity_id: str
    amount: int
    expires_at: datetime
    periods: tuple[str, ...] = ()
    budgets: tuple[str, ...] = ()  # the scoped budgets (model, provider, workspace) it holds too
    lease: str = ""  # the id of the store's lease that holds it instead (RedisStore's leasing), or ""


@dataclass(slots=True)  # one per request: a frozen dataclass takes ~3x as long to build
class Admission:
    """The store's answer. ``identity`` is ``None`` when it does not exist and was not created.

    A blocked (or refused) admission has already been counted as a request and an error.
    """

    identity: Identity | None
    blocked: BudgetBlock | None = None
    reservation: Reservation | None = None
    consumed: tuple[Consumed, ...] = ()  # when asked (``AdmissionRequest.consumed``)
    fallback: int = 0  # admitted with ``fallbacks[fallback - 1]`` instead of the estimate (0: the estimate)
    # The project, API-key and match budgets the request was admitted under: its settlement
    # charges them its whole usage (nothing else of the request says which they were).
    charged: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.blocked is None


@dataclass(slots=True)  # one per request: a frozen dataclass takes ~3x as long to build
class Settlement:
    """A finished request: its usage, and the reservation it releases."""

    identity_id: str
    usage: Usage
    reservation: Reservation | None = None
    now: datetime | None = None
    charged: tuple[str, ...] = ()  # ``Admission.charged``: the request's project, API-key and match budgets
