"""The Redis store (standalone, Sentinel, Cluster): key schema in :mod:`.keys`, Lua in ``*.lua``."""

from __future__ import annotations

from ...extras import requires_extra

with requires_extra("redis", "RedisStore"):
    from .options import Lease, RedisOptions, Wait
    from .store import RedisStore

__all__ = ["Lease", "RedisOptions", "RedisStore", "Wait"]
