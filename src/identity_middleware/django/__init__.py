"""Django integration: ``IdentityMiddleware``, ``@budgeted``, settings, system checks, ``manage.py identities``."""

from __future__ import annotations

from ..extras import requires_extra

with requires_extra("django", "identity_middleware.django"):
    from .conf import get_store
    from .decorators import budgeted
    from .middleware import IdentityMiddleware

__all__ = ["IdentityMiddleware", "budgeted", "get_store"]
