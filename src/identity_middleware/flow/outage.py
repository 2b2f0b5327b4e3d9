"""Logs a store outage once when it starts and once when it ends, not once per request."""

from __future__ import annotations

import logging
import threading

__all__ = ["OutageLog"]

logger = logging.getLogger("identity_middleware")


class OutageLog:
    """``down`` while an outage is logged; callers may test it before calling :meth:`ok`."""

    def __init__(self) -> None:
        self.down = False
        self._lock = threading.Lock()

    def failed(self, error: BaseException) -> None:
        with self._lock:
            if self.down:
                return
            self.down = True
        logger.error("identity store unavailable (%s); further failures are not logged until it recovers", error)

    def ok(self) -> None:
        if self.down:
            with self._lock:
                if not self.down:
                    return
                self.down = False
            logger.warning("identity store available again")
