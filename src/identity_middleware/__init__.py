"""identity-middleware: per-identity LLM usage, metrics and period budgets for Python web apps."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .asgi import IdentityMiddleware
from .context import current_identity
from .core.errors import IdentityExists, IdentityNotFound, StoreUnavailable
from .core.models import Budget, BudgetStatus, Identity, IdentityInput, IdentityPage, Metrics
from .core.periods import Period
from .core.validation import InvalidIdentity
from .decorators import budgeted
from .usage import ModelPrice, PriceTable, parse_usage, record_usage

if TYPE_CHECKING:
    from .wsgi import IdentityWSGIMiddleware

__version__ = "0.1.0"

__all__ = [
    "Budget",
    "BudgetStatus",
    "Identity",
    "IdentityExists",
    "IdentityInput",
    "IdentityMiddleware",
    "IdentityNotFound",
    "IdentityPage",
    "IdentityWSGIMiddleware",
    "InvalidIdentity",
    "Metrics",
    "ModelPrice",
    "Period",
    "PriceTable",
    "StoreUnavailable",
    "budgeted",
    "current_identity",
    "parse_usage",
    "record_usage",
]


def __getattr__(name: str) -> Any:
    if name == "IdentityWSGIMiddleware":
        from .wsgi import IdentityWSGIMiddleware

        return IdentityWSGIMiddleware
    raise AttributeError(f"module 'identity_middleware' has no attribute {name!r}")
