"""A clock that moves only when a test moves it (``clock.now += 1.5``), for sans-IO objects that take one."""

from __future__ import annotations


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now
