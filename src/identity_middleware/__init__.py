"""identity-middleware: per-identity LLM usage, metrics and period budgets for Python web apps.

``import identity_middleware`` loads the core types (identities, budgets, metrics, errors) and
``current_identity``; everything else loads on first use (PEP 562): the framework shells
(``IdentityMiddleware`` and ``budgeted`` bring Starlette, ``IdentityWSGIMiddleware`` only the
flow), ``Config``, usage recording and instrumentation. A Flask or Django app never imports Starlette.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .context import current_cost, current_identity, current_tier
from .core.ceilings import Session
from .core.errors import (
    IdentityExists,
    IdentityNotFound,
    RequestBudgetExceeded,
    StoreLate,
    StoreMisconfigured,
    StoreUnavailable,
)
from .core.models import Budget, BudgetStatus, Identity, IdentityInput, IdentityPage, Metrics
from .core.outage import Allowance
from .core.periods import Period
from .core.tiers import Tier
from .core.validation import InvalidIdentity

if TYPE_CHECKING:
    from .asgi import IdentityMiddleware
    from .config import Config
    from .flow.streams import metered_stream
    from .instrumentation import instrument
    from .starlette import budgeted
    from .usage import ModelPrice, PriceTable, parse_usage, record_usage
    from .wsgi import IdentityWSGIMiddleware

__version__ = "0.1.0"

__all__ = [
    "Allowance",
    "Budget",
    "BudgetStatus",
    "Config",
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
    "RequestBudgetExceeded",
    "Session",
    "StoreLate",
    "StoreMisconfigured",
    "StoreUnavailable",
    "Tier",
    "budgeted",
    "current_cost",
    "current_identity",
    "current_tier",
    "instrument",
    "metered_stream",
    "parse_usage",
    "record_usage",
]

_LAZY = {"IdentityMiddleware": ".asgi", "budgeted": ".starlette", "IdentityWSGIMiddleware": ".wsgi",
         "Config": ".config", "instrument": ".instrumentation", "ModelPrice": ".usage", "PriceTable": ".usage",
         "parse_usage": ".usage", "record_usage": ".usage", "metered_stream": ".flow.streams"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'identity_middleware' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value  # looked up once
    return value
