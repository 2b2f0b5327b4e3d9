"""Stores: where identities, budgets, spend and metrics live. ``MemoryStore`` embedded, ``RedisStore`` shared."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Store
from .memory import MemoryStore
from .urls import check_url

if TYPE_CHECKING:
    from .redis import Lease, RedisOptions, RedisStore, Wait

__all__ = ["Lease", "MemoryStore", "RedisOptions", "RedisStore", "Store", "Wait", "store_from_url"]


def __getattr__(name: str) -> Any:
    # RedisStore (and its Lease and Wait options) is imported on first use, so the redis client
    # stays an optional dependency.
    if name in ("Lease", "RedisOptions", "RedisStore", "Wait"):
        from . import redis

        return getattr(redis, name)
    raise AttributeError(name)


def store_from_url(url: str, **options: Any) -> Store:
    """``memory://`` or a Redis URL (``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://``,
    ``redis+cluster://``); any other is refused here with :class:`StoreMisconfigured` (a
    ``ValueError``) naming the URL, its password masked, and what is wrong with it."""
    if check_url(url).startswith("memory://"):
        return MemoryStore(**options)
    from .redis import RedisStore

    return RedisStore.from_url(url, **options)
