"""The embedded store: everything in this process's memory, thread-safe, atomic under one lock.

``store`` holds the lock and every operation of the Store protocol (identities, admission and
settlement, scoped budgets, credits); ``records`` the identity records and their order; ``ledger``
each identity's budgets, spend, reservations and daily metrics; ``budgets`` the scoped budgets'
definitions and consumption.
"""

from __future__ import annotations

from .store import MemoryStore

__all__ = ["MemoryStore"]
