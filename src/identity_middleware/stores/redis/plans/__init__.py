"""Every store operation as a sans-IO plan: a generator that yields Redis steps and gets replies.

The sync and async runners drive the same plans, so argument building, reply parsing and the order
of round trips exist once; only the client call differs. The protocol (steps) is in :mod:`..steps`.
:class:`Plans` is composed of one object per concern, each over the shared :class:`.records.Records`
(the key schema, the cached records and hash tags, the identity script calls) and, where global
budgets matter, the :class:`.registry.Registry`: :mod:`.identities` (records and the list),
:mod:`.budgets` (budgets of every scope and the usage reads), :mod:`.credits` (top-ups),
:mod:`.requests` (admit and settle),
with :mod:`.globals` (model, provider and workspace budgets on the request path) and :mod:`.lease`
(leasing, when on); :mod:`.codec` parses replies.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import tzinfo
from typing import TYPE_CHECKING

from ..options import SETTLE_ID_TTL
from .budgets import BudgetPlans
from .charges import Charge
from .credits import CreditPlans
from .globals import GlobalBudgets
from .identities import IdentityPlans
from .records import Records
from .registry import Registry
from .requests import RequestPlans

if TYPE_CHECKING:  # leasing is loaded only when it is on
    from ..lease import Leases
    from .lease import LeasePlans

__all__ = ["SETTLE_ID_TTL", "Charge", "Plans"]


class Plans:
    """The store's operations as plans, over one key schema, timezone and reservation TTL."""

    def __init__(self, prefix: str, tz: tzinfo, reservation_ttl: float, settle_id_ttl: int = SETTLE_ID_TTL, *,
                 global_budgets: bool = False, leases: Leases | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.records = Records(prefix, tz, reservation_ttl, settle_id_ttl)
        self.registry = Registry(self.records.keys, tz, global_budgets, clock)
        self.identities = IdentityPlans(self.records)
        self.budgets = BudgetPlans(self.records, self.registry)
        self.credits = CreditPlans(self.budgets)
        self.leasing: LeasePlans | None = None
        if leases is not None:
            from .lease import LeasePlans

            self.leasing = LeasePlans(self.records, self.registry, leases)
        self.globals = GlobalBudgets(self.records, self.registry)
        self.requests = RequestPlans(self.records, self.registry, self.globals, self.leasing)
