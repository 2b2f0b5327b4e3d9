"""A store checked when the app starts: misconfiguration stops the start, an unreachable store is logged.

The shells call :func:`store_ready` (sync: the WSGI middleware and Django's when they are built)
or :func:`astore_ready` (the ASGI lifespan's startup). A store that can never work as configured
(a refused password, no such database; a bad URL was refused earlier, when the store was built)
raises :class:`StoreMisconfigured`, naming the URL (password masked) and the cause. A store that
cannot be reached now is logged as an error in the same words and the app starts: its requests
meet ``on_store_error`` until the store answers.
"""

from __future__ import annotations

import logging

from ..core.errors import StoreMisconfigured, StoreUnavailable
from .base import Store

__all__ = ["astore_ready", "store_ready"]

logger = logging.getLogger("identity_middleware")


def store_ready(store: Store) -> None:
    """Raise :class:`StoreMisconfigured`, or log an unreachable store and return."""
    try:
        store.check_ready()
    except StoreMisconfigured:
        raise
    except StoreUnavailable as error:
        _unreachable(error)


async def astore_ready(store: Store) -> None:
    """The async twin of :func:`store_ready`."""
    try:
        await store.acheck_ready()
    except StoreMisconfigured:
        raise
    except StoreUnavailable as error:
        _unreachable(error)


def _unreachable(error: StoreUnavailable) -> None:
    logger.error("%s at startup; requests follow on_store_error until it answers", error)
