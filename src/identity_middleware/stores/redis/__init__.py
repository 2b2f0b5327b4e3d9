"""The Redis store (standalone, Sentinel, Cluster): key schema in :mod:`.keys`, Lua in ``*.lua``."""

from __future__ import annotations

from .store import RedisStore

__all__ = ["RedisStore"]
