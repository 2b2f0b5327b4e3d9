"""Per-identity rate limits: the ``limits`` library behind one small sync/async interface."""

from __future__ import annotations

import asyncio
import math
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, parse, strategies
from limits.aio import strategies as aio_strategies
from limits.storage import storage_from_string

from .core.errors import StoreUnavailable

__all__ = ["RateLimitExceeded", "RateLimiter"]

_STRATEGIES = {
    "moving-window": (strategies.MovingWindowRateLimiter, aio_strategies.MovingWindowRateLimiter),
    "fixed-window": (strategies.FixedWindowRateLimiter, aio_strategies.FixedWindowRateLimiter),
    "sliding-window-counter": (strategies.SlidingWindowCounterRateLimiter,
                               aio_strategies.SlidingWindowCounterRateLimiter),
}
_NAMESPACE = "identity-middleware"
# Idle ids cleared per hit at most (memory storage). A hit adds at most one id, so clearing a few
# keeps up with any arrival rate, and a request never pays for a sweep of all ids (95,000 of them
# held one for 0.5-0.77 s when the sweep cleared every idle id at once).
SWEEP_SLICE = 4


@dataclass(frozen=True, slots=True)
class RateLimitExceeded:
    """A refusal: the limit (``"100/minute"``), seconds to wait and the IETF draft headers."""

    limit: str
    retry_after: int
    headers: list[tuple[str, str]]


def _storage_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError, OSError]
    try:
        from limits.errors import StorageError

        errors.append(StorageError)
    except ImportError:  # pragma: no cover - older limits
        pass
    try:
        import redis.exceptions

        errors += [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError]
    except ImportError:  # redis is an optional dependency
        pass
    return tuple(errors)


class RateLimiter:
    """``default`` applies to every identity, ``overrides`` replace it per external id.

    Limits are strings the ``limits`` library parses: ``"100/minute"``, ``"10/second;1000/day"``.
    ``storage_uri`` is a ``limits`` storage (``memory://``, ``redis://...``); a store offers its own
    as ``store.rate_limit_storage_uri`` so limits live on the same server as budgets.
    """

    def __init__(
        self,
        default: str | None = None,
        overrides: Mapping[str, str] | None = None,
        *,
        storage_uri: str = "memory://",
        strategy: str = "moving-window",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if strategy not in _STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; one of {sorted(_STRATEGIES)}")
        self._default = self._parse(default) if default else []
        self._overrides = {key: self._parse(value) for key, value in (overrides or {}).items()}
        self._storage_uri = storage_uri
        self._sync_class, self._async_class = _STRATEGIES[strategy]
        self._sync: Any = None
        self._sync_lock = threading.Lock()
        # An async storage is bound to the loop that created its connections: one per loop.
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._memory = storage_uri.startswith("memory://")
        self._errors = _storage_errors()
        # The memory storage keeps a key per id forever (limits never drops a moving window that is
        # not hit again): ids idle for longer than the longest window are cleared, a few per hit,
        # least recently seen first, so memory follows the callers of the last window, not all
        # callers ever. ``_seen`` is ordered by last hit; the sweep stops at the first id not idle.
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._seen_lock = threading.Lock()
        self._clock = clock
        self._idle_after = max((item.get_expiry() for items in (self._default, *self._overrides.values())
                                for item in items), default=0)

    @staticmethod
    def _parse(text: str) -> list[RateLimitItem]:
        items = [parse(part.strip()) for part in text.split(";") if part.strip()]
        if not items:
            raise ValueError(f"not a rate limit: {text!r}")
        return items

    def limits_for(self, external_id: str) -> list[RateLimitItem]:
        return self._overrides.get(external_id, self._default)

    def __bool__(self) -> bool:
        return bool(self._default or self._overrides)

    def _sync_limiter(self) -> Any:
        if self._sync is None:
            with self._sync_lock:
                if self._sync is None:
                    self._sync = self._sync_class(storage_from_string(self._storage_uri))
        return self._sync

    def _async_limiter(self) -> Any:
        loop = asyncio.get_running_loop()
        limiter = self._per_loop.get(loop)
        if limiter is None:
            # limits' async Redis storages default to coredis; we ship redis-py, so ask for it.
            options = {} if self._memory else {"implementation": "redispy"}
            limiter = self._async_class(storage_from_string("async+" + self._storage_uri, **options))
            self._per_loop[loop] = limiter
        return limiter

    def _exceeded(self, item: RateLimitItem, reset_time: float, remaining: int = 0) -> RateLimitExceeded:
        wait = max(1, math.ceil(reset_time - time.time()))
        window = item.get_expiry()
        policy = f'"identity";q={item.amount};w={window}'
        return RateLimitExceeded(
            limit=f"{item.amount}/{item.GRANULARITY.name}" if item.multiples == 1
            else f"{item.amount}/{item.multiples} {item.GRANULARITY.name}",
            retry_after=wait,
            headers=[("ratelimit-policy", policy), ("ratelimit", f'"identity";r={remaining};t={wait}')],
        )

    def hit(self, external_id: str) -> RateLimitExceeded | None:
        """Count one request; the first exhausted limit, or ``None`` when it may pass."""
        items = self.limits_for(external_id)
        if not items:
            return None
        limiter = self._sync_limiter()
        if self._memory:
            now = self._clock()
            with self._seen_lock:
                self._seen[external_id] = now
                self._seen.move_to_end(external_id)
                self._sweep(now, SWEEP_SLICE)
        try:
            for item in items:
                if not limiter.hit(item, _NAMESPACE, external_id):
                    stats = limiter.get_window_stats(item, _NAMESPACE, external_id)
                    return self._exceeded(item, stats.reset_time, stats.remaining)
        except self._errors as error:
            raise StoreUnavailable(f"rate limit storage: {error}") from error
        return None

    @property
    def tracked_ids(self) -> int:
        """How many ids the memory storage holds windows for (0 for a shared storage)."""
        return len(self._seen)

    def sweep(self, now: float, at_most: int | None = None) -> int:
        """Clear the windows of ids not seen for longer than the longest window (memory storage),
        least recently seen first, ``at_most`` of them (all when ``None``); how many were cleared."""
        with self._seen_lock:
            return self._sweep(now, at_most)

    def _sweep(self, now: float, at_most: int | None) -> int:
        seen, cleared, limiter = self._seen, 0, self._sync_limiter()
        while seen and (at_most is None or cleared < at_most):
            external_id, last = next(iter(seen.items()))
            if now - last <= self._idle_after:
                break  # the least recently seen id is not idle: none after it is
            del seen[external_id]
            for item in self.limits_for(external_id):
                limiter.clear(item, _NAMESPACE, external_id)
            cleared += 1
        return cleared

    async def ahit(self, external_id: str) -> RateLimitExceeded | None:
        items = self.limits_for(external_id)
        if not items:
            return None
        if self._memory:
            return self.hit(external_id)  # in-process and non-blocking: no need for the async storage
        limiter = self._async_limiter()
        try:
            for item in items:
                if not await limiter.hit(item, _NAMESPACE, external_id):
                    stats = await limiter.get_window_stats(item, _NAMESPACE, external_id)
                    return self._exceeded(item, stats.reset_time, stats.remaining)
        except self._errors as error:
            raise StoreUnavailable(f"rate limit storage: {error}") from error
        return None
