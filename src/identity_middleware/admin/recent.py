"""Replies that read the whole workspace, kept for a poll interval: the Overview reads every identity,
so it is computed at most once per :data:`FRESH` seconds (or twice the time it took, if longer) per
store and range in a process, however many dashboards poll it; requests arriving while it is being
computed wait for that computation instead of starting their own.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..stores.base import Store
from .errors import Reply

__all__ = ["FRESH", "RecentReplies"]

FRESH = 5.0  # seconds: the dashboard's poll interval (live.js)


@dataclass(slots=True)
class _Entry:
    reply: Reply | None = None
    done_at: float = 0.0
    took: float = 0.0
    pending: asyncio.Future[Reply] | None = None


class RecentReplies:
    """The last reply per store and key, served again while fresh (``clock``: seconds, monotonic)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, fresh: float = FRESH) -> None:
        self.clock = clock
        self.fresh = fresh
        self._entries: weakref.WeakKeyDictionary[Store, dict[str, _Entry]] = weakref.WeakKeyDictionary()

    async def get(self, store: Store, key: str, compute: Callable[[], Awaitable[Reply]]) -> Reply:
        entry = self._entries.setdefault(store, {}).setdefault(key, _Entry())
        if entry.reply is not None and self.clock() - entry.done_at < max(self.fresh, 2 * entry.took):
            return entry.reply
        loop = asyncio.get_running_loop()
        pending = entry.pending
        if pending is not None and pending.get_loop() is loop:  # another loop's (a WSGI shell's) cannot be awaited
            await asyncio.wait([pending])  # share the computation under way; its failure is not ours
            if not pending.cancelled():
                return pending.result()
        future: asyncio.Future[Reply] = loop.create_future()
        entry.pending = future
        started = self.clock()
        try:
            reply = await compute()
        except BaseException:
            future.cancel()  # whoever waits computes for itself
            raise
        finally:
            if entry.pending is future:
                entry.pending = None
        done = self.clock()
        entry.reply, entry.done_at, entry.took = reply, done, done - started
        future.set_result(reply)
        return reply
