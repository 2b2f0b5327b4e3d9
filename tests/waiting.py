"""Waiting for something another process or thread does: the suite's one poll loop.

A test waits only for a condition it then relies on (a server answering, a connection closed, a
key expired in Redis), never for time to pass: the deadline is generous (tens of seconds on a host
where the condition takes milliseconds) and only bounds how long a broken test takes to fail.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(probe: Callable[[], T], what: str, *, within: float = 30.0, every: float = 0.01) -> T:
    """Call ``probe`` until it returns something true, and return that; after ``within`` seconds
    fail with ``AssertionError`` naming ``what`` was awaited. ``probe`` may raise to stop at once
    (e.g. when the process it waits for has exited)."""
    deadline = time.monotonic() + within
    while not (found := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within:g} s")
        time.sleep(every)
    return found
