"""The registry of model, provider and workspace budgets, as the request path reads it (cached).

A model, provider or workspace budget's definition is in the registry (``P:{budgets}:defs``, cached
here for :data:`REFRESH` seconds) and its counters live under its own hash tag (``P:{<budget id>}:...``):
checked and reserved atomically per budget by ``scoped.lua`` (:meth:`Registry.scoped_eval`).

Every admission needs the registry, and on a Cluster it lives on one master: so the store reads it
before an admission once the copy is stale (:meth:`Registry.due`, :meth:`Registry.refresh`) and, when
that read fails (the master holding it is down or failing over), keeps serving the last good copy
(:meth:`Registry.failed`): identities on healthy masters are served as usual. The read is tried again
:data:`REFRESH` seconds later; a copy older than :data:`STALE_LIMIT` is no longer served (the
admission then reads the registry itself, and meets the outage). So a budget created or changed by
another process is seen within :data:`REFRESH` seconds while the registry answers, and within
:data:`STALE_LIMIT` seconds of its last good read while it does not.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, tzinfo

from ....core.admission import AdmissionRequest
from ....core.budgets import ScopedBudget, ScopeKind, budget_bounds, matches_request, matching_targets
from ....core.matching import MatchIndex, matching_globals
from ....core.models import Identity
from ....core.periods import UTC
from ...scoped import Notify
from ..keys import KeySchema
from ..scripts import SCOPED
from ..steps import Call, Eval, Plan
from . import codec

REFRESH = 1.0  # seconds a process trusts its copy of the model/provider/workspace budgets
STALE_LIMIT = 60.0  # seconds the last good copy is served while the registry cannot be read
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
        #: Whether model or provider budgets may match a request, and whether a match expression
        #: reads the request's headers (both unknown, so ``True``, until the registry is read):
        #: asked per request, so worked out once per read.
        self.wants_model = self.wants_headers = global_budgets
        #: The match budgets compiled, with their membership cache: kept across reads of the
        #: registry while their expressions stay the same (see :mod:`....core.matching`).
        self.index = MatchIndex(())
        self._failed_at: float | None = None  # when the last read of a stale copy failed
        self._reading_since: float | None = None  # when the read of a stale copy now on its way began

    def fresh_defs(self) -> dict[str, ScopedBudget] | None:
        """The cached registry while it is fresh (or, after a failed read, the last good copy for
        :data:`REFRESH` seconds more, within :data:`STALE_LIMIT`), else None."""
        cached = self._defs_cache
        if cached is None:
            return None
        now = self.clock()
        age = now - cached[0]
        if age < REFRESH:
            return cached[1]
        if age < STALE_LIMIT:
            # One read of a stale copy at a time: while it is on its way (or for REFRESH seconds
            # after it failed) the requests meanwhile are served the copy held, not a read each.
            for since in (self._failed_at, self._reading_since):
                if since is not None and now - since < REFRESH:
                    return cached[1]
        return None

    def held_defs(self) -> dict[str, ScopedBudget] | None:
        """The registry as an admission reads it: the copy held while younger than :data:`STALE_LIMIT`
        (a stale one is read apart, before the admission, by :meth:`refresh`, whose failure leaves
        this copy serving), else None (the admission reads it itself). An admission never reads a
        stale registry inline: on a Cluster whose registry master is down, that read failed the
        admission of an identity on a healthy master (between two reads apart)."""
        cached = self._defs_cache
        if cached is None or self.clock() - cached[0] >= STALE_LIMIT:
            return None
        return cached[1]

    def due(self) -> bool:
        """Whether the request path should read the registry before an admission: a copy is held
        (else the admission reads it itself) and is stale, and no read failed within :data:`REFRESH`."""
        cached = self._defs_cache
        if not self.global_budgets or cached is None or self.clock() - cached[0] < REFRESH:
            return False  # every admission asks: a fresh copy answers without fresh_defs
        return self.fresh_defs() is None

    def refresh(self) -> Plan[dict[str, ScopedBudget]]:
        """Read the registry (run apart from an admission, so its failure is :meth:`failed`'s, not the
        request's); until it is answered, or fails, no other request reads it."""
        self._reading_since = self.clock()
        return self.keep_defs((yield self.defs_call()))

    def failed(self) -> None:
        """A read of the registry failed: the last good copy is served for :data:`REFRESH` seconds more
        (within :data:`STALE_LIMIT` of its read), then the read is tried again."""
        self._failed_at = self.clock()
        self._reading_since = None

    def may_have_globals(self) -> bool:
        """Whether model, provider or workspace budgets may apply (unknown until the registry is read)."""
        if not self.global_budgets:
            return False
        cached = self._defs_cache
        return cached is None or bool(cached[1])

    def defs_call(self) -> Call:
        return Call("hgetall", (self.keys.budget_defs,))

    def keep_defs(self, reply: object) -> dict[str, ScopedBudget]:
        defs = {budget_id: ScopedBudget.from_record(text) for budget_id, text in codec.as_map(reply).items()}
        if not self.index.same_as(defs.values()):
            self.index = MatchIndex(defs.values())
        self._defs_cache = (self.clock(), defs)
        self.wants_model = self.global_budgets and (self.index.wants_model or any(
            budget.scope in (ScopeKind.MODEL, ScopeKind.PROVIDER) for budget in defs.values()))
        self.wants_headers = self.global_budgets and self.index.wants_headers
        self._failed_at = self._reading_since = None
        return defs

    def global_defs(self, *, fresh: bool = False) -> Plan[dict[str, ScopedBudget]]:
        cached = None if fresh else self.fresh_defs()
        if cached is not None:
            return cached
        return self.keep_defs((yield self.defs_call()))

    def forget(self) -> None:
        """Read the registry again before the next request that needs it (a budget changed here)."""
        self._defs_cache = None
        self.wants_model = self.wants_headers = self.global_budgets
        self._failed_at = self._reading_since = None

    def matching_globals(self, identity: Identity, request: AdmissionRequest,
                         now: datetime) -> Plan[list[ScopedBudget]]:
        """The live global budgets ``request`` of ``identity`` falls under."""
        defs = self.held_defs()
        if defs is None:
            defs = yield from self.global_defs()
        if not defs:
            return []
        return self.matching(defs, identity, request, now)

    def matching(self, defs: dict[str, ScopedBudget], identity: Identity, request: AdmissionRequest,
                 now: datetime) -> list[ScopedBudget]:
        index = self.index
        matched = index.matched(request, identity, self.providers) if index else None
        return matching_globals(defs.values(), request, self.providers, now, matched)

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
        # A match budget may apply: whether it does needs the identity's record (its metadata).
        return any(budget.live(now) and (budget.scope is ScopeKind.MATCH or matches_request(
            budget, request.external_id, targets, request.project, request.api_key)) for budget in defs.values())

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
