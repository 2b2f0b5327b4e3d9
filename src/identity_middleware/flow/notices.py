"""Configuration mistakes seen while serving, logged the first time only (not once per request)."""

from __future__ import annotations

import logging
import threading

__all__ = ["Notices"]

logger = logging.getLogger("identity_middleware")


class Notices:
    """One flow's notices: each said once (a process serves one flow per app)."""

    def __init__(self) -> None:
        self._told: set[str] = set()
        self._lock = threading.Lock()

    def _first(self, what: str) -> bool:
        with self._lock:
            if what in self._told:
                return False
            self._told.add(what)
            return True

    def no_authenticated_user(self, where: str, fix: str) -> None:
        """The "auth" source is on and the request carries no user at all (``where`` is missing):
        no request is named by its user, so each is refused (401) or passes anonymous."""
        if self._first(where):
            logger.warning('identity source "auth": the request has no %s, so no request is named by its user; '
                           "%s", where, fix)
