"""One group of orq's SDK methods (``orq.identities``, ``orq.budgets``), called through the sync methods or,
given a blocking portal, through their ``*_async`` twins: a test runs unchanged both ways."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import anyio.from_thread


class SdkCalls:
    def __init__(self, group: object, portal: anyio.from_thread.BlockingPortal | None) -> None:
        self._group = group
        self._portal = portal

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if self._portal is None:
            return getattr(self._group, name)  # type: ignore[no-any-return]
        method = getattr(self._group, f"{name}_async")
        portal = self._portal
        return lambda **kwargs: portal.call(functools.partial(method, **kwargs))
