"""The pure core: models, validation, periods, money, resolution and admission. No I/O here."""

from .admission import (
    Admission,
    AdmissionRequest,
    BudgetBlock,
    BudgetState,
    ModelUsage,
    Reservation,
    Settlement,
    Usage,
    decide,
)
from .errors import IdentityExists, IdentityNotFound, StoreUnavailable
from .models import Budget, BudgetStatus, Identity, IdentityInput, IdentityPage, IdentityUpdate, Metrics, ModelMetrics
from .money import format_usd, from_nanos, to_decimal, to_nanos
from .periods import Period, period_bounds, period_end, period_start, seconds_to_reset
from .validation import InvalidIdentity

__all__ = [
    "Admission",
    "AdmissionRequest",
    "Budget",
    "BudgetBlock",
    "BudgetState",
    "BudgetStatus",
    "Identity",
    "IdentityExists",
    "IdentityInput",
    "IdentityNotFound",
    "IdentityPage",
    "IdentityUpdate",
    "InvalidIdentity",
    "Metrics",
    "ModelMetrics",
    "ModelUsage",
    "Period",
    "Reservation",
    "Settlement",
    "StoreUnavailable",
    "Usage",
    "decide",
    "format_usd",
    "from_nanos",
    "period_bounds",
    "period_end",
    "period_start",
    "seconds_to_reset",
    "to_decimal",
    "to_nanos",
]
