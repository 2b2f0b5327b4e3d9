"""Requests admitted in each degrade tier (``degrade=``), counted per process since it started:
``identity_middleware_tier_requests_total{tier=...}`` in the admin app's ``/metrics``."""

from __future__ import annotations

import threading

__all__ = ["count_tier", "tier_requests"]

_lock = threading.Lock()
_counts: dict[str, int] = {}


def count_tier(name: str) -> None:
    """One request admitted in the tier named ``name``."""
    with _lock:
        _counts[name] = _counts.get(name, 0) + 1


def tier_requests() -> dict[str, int]:
    """Requests per tier name that this process admitted in a tier (requests in no tier are not counted)."""
    with _lock:
        return dict(_counts)
