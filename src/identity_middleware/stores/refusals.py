"""The refusal log: the most recent requests a budget refused (429), kept by the store that refused them.

A store appends one :class:`Refusal` in the admission that refuses (MemoryStore under its lock,
RedisStore in the same plan, right after the admission script answers). The log is bounded: at most
:data:`REFUSAL_LOG_SIZE` entries (the oldest drop out) and none older than :data:`REFUSAL_TTL`
(dropped when read; on Redis the whole list also expires that long after its newest entry).
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from ..core.admission import BudgetBlock
from ..core.money import format_usd

__all__ = ["REFUSAL_LOG_SIZE", "REFUSAL_TTL", "MemoryRefusalLog", "Refusal", "check_refusal_limit", "refusal_of"]

REFUSAL_LOG_SIZE = 1000
REFUSAL_TTL = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Refusal:
    """One refused request: when, whose, which budget (id, scope, period), its limit, consumption and
    the estimate that did not fit (USD; ``estimate`` 0 when the budget was already used up)."""

    at: datetime
    external_id: str
    identity_id: str
    budget_id: str | None
    scope: str | None
    period: str
    amount: Decimal
    spent: Decimal
    reserved: Decimal
    estimate: Decimal

    def to_json(self) -> dict[str, str | None]:
        return {"at": self.at.isoformat(), "external_id": self.external_id, "identity_id": self.identity_id,
                "budget_id": self.budget_id, "scope": self.scope, "period": self.period,
                "amount": format_usd(self.amount), "spent": format_usd(self.spent),
                "reserved": format_usd(self.reserved), "estimate": format_usd(self.estimate)}

    def encode(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))

    @classmethod
    def decode(cls, text: str | bytes) -> Refusal:
        data = json.loads(text)
        return cls(at=datetime.fromisoformat(data["at"]), external_id=data["external_id"],
                   identity_id=data["identity_id"], budget_id=data["budget_id"], scope=data["scope"],
                   period=data["period"], amount=Decimal(data["amount"]), spent=Decimal(data["spent"]),
                   reserved=Decimal(data["reserved"]), estimate=Decimal(data["estimate"]))


def refusal_of(block: BudgetBlock, external_id: str, identity_id: str, estimate: int, now: datetime) -> Refusal:
    """The log entry of an admission refused with ``block`` (``estimate`` in nano-USD)."""
    return Refusal(at=now, external_id=external_id, identity_id=identity_id, budget_id=block.budget_id,
                   scope=block.scope, period=str(getattr(block.period, "value", block.period)),
                   amount=block.amount, spent=block.spent, reserved=block.reserved,
                   estimate=Decimal(estimate) / 1_000_000_000)


def check_refusal_limit(limit: int) -> int:
    if not 1 <= limit <= REFUSAL_LOG_SIZE:
        raise ValueError(f"limit must be 1 to {REFUSAL_LOG_SIZE}")
    return limit


class MemoryRefusalLog:
    """The log in a bounded deque, newest last; thread-safe on its own (appends come from admissions)."""

    def __init__(self, size: int = REFUSAL_LOG_SIZE, ttl: timedelta = REFUSAL_TTL) -> None:
        self._entries: deque[Refusal] = deque(maxlen=size)
        self._ttl = ttl
        self._lock = threading.Lock()

    def add(self, refusal: Refusal) -> None:
        with self._lock:
            self._entries.append(refusal)

    def recent(self, limit: int, now: datetime) -> list[Refusal]:
        """At most ``limit`` refusals newer than the TTL, newest first."""
        oldest = now - self._ttl
        with self._lock:
            while self._entries and self._entries[0].at < oldest:
                self._entries.popleft()
            return [entry for entry in reversed(self._entries) if entry.at >= oldest][:limit]
