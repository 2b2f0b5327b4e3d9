"""The registry of model, provider and workspace budgets, as the request path reads it (cached).

A model, provider or workspace budget's definition is in the registry (``P:{budgets}:defs``, cached
here for :data:`REFRESH` seconds) and its counters live under its own hash tag (``P:{<budget id>}:...``):
checked and reserved atomically per budget by ``scoped.lua`` (:meth:`Registry.scoped_eval`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, tzinfo

from ....core.admission import AdmissionRequest
from ....core.budgets import ScopedBudget, ScopeKind, budget_bounds, matches_request, matching_targets
from ....core.periods import UTC
from ...scoped import Notify
from ..keys import KeySchema
from ..scripts import SCOPED
from ..steps import Call, Eval, Plan
from . import codec

REFRESH = 1.0  # seconds a process trusts its copy of the model/provider/workspace budgets
BUCKET_MS = 10_000  # usage.requests and requests_per_minute count admissions in 10 s buckets


class Registry:
    """The global budgets' definitions (cached), the provider map and where threshold events go."""

    def __init__(self, keys: KeySchema, tz: tzinfo, global_budgets: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.keys = keys
        self.tz = tz
        self.clock = clock
        #: Whether the request path consults the registry (RedisStore's ``global_budgets``); off,
        #: admission and settlement never read it.
        self.global_budgets = global_budgets
        self.providers: Mapping[str, str] = {}
        self.notify: Notify | None = None
        self._defs_cache: tuple[float, dict[str, ScopedBudget]] | None = None

    def fresh_defs(self) -> dict[str, ScopedBudget] | None:
        """The cached registry while it is fresh, else None."""
        cached = self._defs_cache
        if cached is not None and self.clock() - cached[0] < REFRESH:
            return cached[1]
        return None

    def may_have_globals(self) -> bool:
        """Whether model, provider or workspace budgets may apply (unknown until the registry is read)."""
        if not self.global_budgets:
            return False
        cached = self._defs_cache
        return cached is None or bool(cached[1])

    def wants_model(self) -> bool:
        """Whether model or provider budgets may match a request (unknown until the registry is read)."""
        if not self.global_budgets:
            return False
        cached = self._defs_cache
        return cached is None or any(b.scope in (ScopeKind.MODEL, ScopeKind.PROVIDER) for b in cached[1].values())

    def defs_call(self) -> Call:
        return Call("hgetall", (self.keys.budget_defs,))

    def keep_defs(self, reply: object) -> dict[str, ScopedBudget]:
        defs = {budget_id: ScopedBudget.from_record(text) for budget_id, text in codec.as_map(reply).items()}
        self._defs_cache = (self.clock(), defs)
        return defs

    def global_defs(self, *, fresh: bool = False) -> Plan[dict[str, ScopedBudget]]:
        cached = None if fresh else self.fresh_defs()
        if cached is not None:
            return cached
        return self.keep_defs((yield self.defs_call()))

    def forget(self) -> None:
        """Read the registry again before the next request that needs it (a budget changed here)."""
        self._defs_cache = None

    def matching_globals(self, identity: str | None, model: str | None, now: datetime) -> Plan[list[ScopedBudget]]:
        """The live global budgets a request of ``identity`` for ``model`` falls under."""
        defs = yield from self.global_defs()
        if not defs:
            return []
        targets = matching_targets(model, self.providers)
        return [b for b in defs.values() if b.live(now) and matches_request(b, identity, targets)]

    def may_apply(self, request: AdmissionRequest, *, unknown: bool = True) -> bool:
        """Whether a model, provider or workspace budget applies to ``request`` (or, when the
        registry is not fresh, ``unknown``), which only the admit plan checks."""
        if not self.global_budgets:
            return False
        defs = self.fresh_defs()
        if not defs:
            return unknown and defs is None
        now = datetime.now(UTC)
        targets = matching_targets(request.model, self.providers)
        return any(budget.live(now) and matches_request(budget, request.external_id, targets)
                   for budget in defs.values())

    def scoped_eval(self, budget: ScopedBudget, mode: str, now: datetime, args: Iterable[str | int],
                    fourth: str | None = None) -> Eval:
        key, _, _ = budget_bounds(budget, now, self.tz)
        keys = [self.keys.scoped(budget.id, f"u:{key}"), self.keys.scoped(budget.id, "r"),
                self.keys.scoped(budget.id, f"a:{key}")]
        if fourth is not None:
            keys.append(fourth)
        else:
            bucket = codec.ms(now) // BUCKET_MS
            keys += [self.keys.scoped(budget.id, f"q:{bucket - back}") for back in range(6)]
        return Eval(SCOPED, keys, [mode, *args])
