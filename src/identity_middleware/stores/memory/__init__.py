"""The embedded store: everything in this process's memory, thread-safe, atomic under one lock.

``store`` holds the lock and the Store protocol; ``records`` the identity records and their order;
``ledger`` each identity's budgets, spend, reservations and daily metrics.
"""

from __future__ import annotations

from .store import MemoryStore

__all__ = ["MemoryStore"]
