"""ULIDs that sort in creation order, even for several created within one millisecond."""

from __future__ import annotations

import threading

from ulid import ULID

_lock = threading.Lock()
_last = 0


def new_ulid() -> str:
    """A fresh ULID string, strictly greater than the previous one made by this process."""
    global _last
    candidate = int(ULID())
    with _lock:
        if candidate <= _last:
            candidate = _last + 1
        _last = candidate
    return str(ULID.from_int(candidate))


def is_ulid(value: str) -> bool:
    if len(value) != 26:
        return False
    try:
        ULID.from_str(value)
    except ValueError:
        return False
    return True
