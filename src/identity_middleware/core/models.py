"""The domain's records: identities, budgets, their live status and 30-day metrics (pydantic v2)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
)

from .forecast import Forecast
from .metrics import DailyMetrics, Metrics, ModelMetrics, daily_from_counters, metrics_from_totals
from .money import format_usd, from_nanos, limit_amount
from .periods import Period
from .validation import (
    InvalidIdentity,
    check_email,
    check_id,
    check_metadata,
    check_tags,
    check_text,
)

__all__ = [
    "Budget",
    "BudgetStatus",
    "DailyMetrics",
    "Identity",
    "IdentityInput",
    "IdentityPage",
    "IdentityUpdate",
    "Metrics",
    "ModelMetrics",
    "Period",
    "budget_status",
    "daily_from_counters",
    "metrics_from_totals",
]


def _invalid_from(error: ValidationError) -> InvalidIdentity:
    first = error.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else "identity"
    if field == "logo_url":
        field = "avatar_url"
    message = first["msg"].removeprefix("Value error, ")
    return InvalidIdentity(field, message)


class IdentityUpdate(BaseModel):
    """Fields that change on an existing identity: those given replace, those absent stay."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    display_name: str | None = None
    email: str | None = None
    avatar_url: str | None = Field(
        default=None, validation_alias=AliasChoices("avatar_url", "logo_url")
    )
    tags: list[str] | None = None
    metadata: dict[str, Any] | None = None

    @field_validator("display_name", "avatar_url", mode="before")
    @classmethod
    def _text(cls, value: object, info: Any) -> str | None:
        return check_text(value, info.field_name)

    @field_validator("email", mode="before")
    @classmethod
    def _email(cls, value: object) -> str | None:
        return check_email(value)

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: object) -> list[str] | None:
        return check_tags(value)

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata(cls, value: object) -> dict[str, Any] | None:
        return check_metadata(value)

    @classmethod
    def parse(cls, data: object) -> IdentityUpdate:
        """Validate raw JSON-ish data; raise :class:`InvalidIdentity` naming the field."""
        if not isinstance(data, dict):
            raise InvalidIdentity("identity", "identity must be an object")
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise _invalid_from(error) from None

    def changes(self) -> dict[str, Any]:
        """Only the fields the caller sent (``logo_url`` arrives as ``avatar_url``)."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class IdentityInput(IdentityUpdate):
    """An identity as a request or the API sends it: ``id`` (or ``external_id``) plus profile."""

    id: str = Field(validation_alias=AliasChoices("id", "external_id"))

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, value: object) -> str:
        return check_id(value)

    @classmethod
    def parse(cls, data: object) -> IdentityInput:
        if not isinstance(data, dict):
            raise InvalidIdentity("identity", "identity must be an object")
        if "id" not in data and "external_id" not in data:
            raise InvalidIdentity("id", "id is required")
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise _invalid_from(error) from None

    def changes(self) -> dict[str, Any]:
        """The profile fields the caller sent, without ``id`` (the usual body identity sends none)."""
        sent = self.model_fields_set
        if len(sent) == 1 and "id" in sent:
            return {}
        return {name: getattr(self, name) for name in sent if name != "id"}


def _usd(value: Decimal) -> str:
    return format_usd(value)


class Budget(BaseModel):
    """A spending cap in USD over one calendar period."""

    model_config = ConfigDict(frozen=True)

    period: Period
    amount: Decimal

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, value: object) -> Decimal:
        return limit_amount(value)

    @field_serializer("amount")
    def _dump_amount(self, value: Decimal) -> str:
        return _usd(value)


class BudgetStatus(BaseModel):
    """A budget's live state: ``remaining = max(amount - spent, 0)``, reservations shown apart."""

    period: Period
    amount: Decimal
    spent: Decimal
    reserved: Decimal
    remaining: Decimal
    percent: float
    period_start: datetime
    resets_at: datetime
    #: Extension: when it runs out at the identity's recent rate (:mod:`~identity_middleware.core.forecast`).
    forecast: Forecast | None = None

    @field_serializer("amount", "spent", "reserved", "remaining")
    def _dump_money(self, value: Decimal) -> str:
        return _usd(value)


_ONLY_WHEN_SET = ("metrics", "budgets", "last_source")


class Identity(BaseModel):
    """The stored record. ``id`` is the ULID (``_id`` in JSON); ``external_id`` is the caller's."""

    model_config = ConfigDict(populate_by_name=True)

    id: str = Field(alias="_id")
    external_id: str
    display_name: str | None = None
    email: str | None = None
    avatar_url: str | None = None
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    created: datetime
    updated: datetime
    metrics: Metrics | None = None
    budgets: list[BudgetStatus] | None = None
    #: Extension: the source of the last admitted request's identity, when the flow passed it.
    last_source: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The REST shape: ``_id`` first; ``metrics``/``budgets`` only when asked for, ``last_source`` when known."""
        exclude = {name for name in _ONLY_WHEN_SET if getattr(self, name) is None}
        return self.model_dump(mode="json", by_alias=True, exclude=exclude)


class IdentityPage(BaseModel):
    data: list[Identity]
    has_more: bool

    def to_json(self) -> dict[str, Any]:
        return {"object": "list", "data": [item.to_json() for item in self.data],
                "has_more": self.has_more}


def budget_status(
    period: Period, amount: int, spent: int, reserved: int, period_start: datetime, resets_at: datetime,
    forecast: Forecast | None = None,
) -> BudgetStatus:
    """A :class:`BudgetStatus` from nano-USD counters (shared by every store)."""
    return BudgetStatus(
        period=period,
        amount=from_nanos(amount),
        spent=from_nanos(spent),
        reserved=from_nanos(reserved),
        remaining=from_nanos(max(amount - spent, 0)),
        percent=round(100 * spent / amount, 4) if amount else 0.0,
        period_start=period_start,
        resets_at=resets_at,
        forecast=forecast,
    )
