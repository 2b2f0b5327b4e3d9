"""identity-middleware: per-identity LLM usage, metrics and period budgets for Python web apps."""

from __future__ import annotations

from .core.errors import IdentityExists, IdentityNotFound, StoreUnavailable
from .core.models import Budget, BudgetStatus, Identity, IdentityInput, IdentityPage, Metrics
from .core.periods import Period
from .core.validation import InvalidIdentity

__version__ = "0.1.0"

__all__ = [
    "Budget",
    "BudgetStatus",
    "Identity",
    "IdentityExists",
    "IdentityInput",
    "IdentityNotFound",
    "IdentityPage",
    "InvalidIdentity",
    "Metrics",
    "Period",
    "StoreUnavailable",
]
