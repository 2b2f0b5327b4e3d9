"""Every store operation as a sans-IO plan: a generator that yields Redis steps and gets replies.

The sync and async runners drive the same plans, so argument building, reply parsing and the order
of round trips exist once; only the client call differs. The protocol (steps, NOSCRIPT) is in
:mod:`..steps`; the plans are grouped by concern: :mod:`.identities` (records and the list),
:mod:`.budgets` (budgets and usage reads), :mod:`.requests` (admit and settle), over the shared
lookups and script calls of :mod:`.base` and the reply parsing of :mod:`.codec`.
"""

from __future__ import annotations

from .base import SETTLE_ID_TTL
from .budgets import BudgetPlans
from .charges import Charge
from .identities import IdentityPlans
from .requests import RequestPlans

__all__ = ["SETTLE_ID_TTL", "Charge", "Plans"]


class Plans(IdentityPlans, BudgetPlans, RequestPlans):
    """The store's operations as plans, over one key schema, timezone and reservation TTL."""
