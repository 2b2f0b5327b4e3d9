"""The I/O a flow plan asks for, as values: a driver performs them, sync or async, and sends back the reply."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from ..context import SessionCeiling
from ..core.admission import AdmissionRequest, Settlement

__all__ = ["LOOK_UP_AUTH", "Admit", "ChargeSession", "Effect", "HitLimit", "LookUpAuth", "Plan", "Settle"]

T = TypeVar("T")


# ``store.admit(request)``, replying an :class:`~identity_middleware.core.admission.Admission`, is asked
# by yielding the :class:`~identity_middleware.core.admission.AdmissionRequest` itself: no object around
# it (building one cost a request ~1,000 instructions).
Admit = AdmissionRequest


@dataclass(slots=True)
class Settle:
    """``store.settle(settlement)``: replies ``None``."""

    settlement: Settlement


@dataclass(slots=True)
class ChargeSession:
    """Add a settled request's cost to its session's spend (``session=``): replies ``None``."""

    session: SessionCeiling
    cost: int


@dataclass(slots=True)
class HitLimit:
    """Count one request against the identity's rate limits: replies a ``RateLimitExceeded`` or ``None``."""

    external_id: str


@dataclass(frozen=True, slots=True)
class LookUpAuth:
    """Ask the shell for the auth context's id (its framework's user, then the app's resolver)."""


LOOK_UP_AUTH = LookUpAuth()

Effect = Admit | Settle | HitLimit | LookUpAuth | ChargeSession
# A plan yields effects and receives their replies; a store outage is thrown into it as
# StoreUnavailable at the yield that asked for the store.
Plan = Generator[Effect, Any, T]
