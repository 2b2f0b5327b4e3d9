"""Django integration: ``IdentityMiddleware``, ``@budgeted``, settings, system checks, ``manage.py identities``."""

from __future__ import annotations

from .decorators import budgeted
from .middleware import IdentityMiddleware

__all__ = ["IdentityMiddleware", "budgeted"]
