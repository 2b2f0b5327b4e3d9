"""One request's life as a plan, written once: resolve -> validate -> rate limit -> admit -> attach -> settle.

One sans-IO unit: the plans take plain values and yield the I/O they need as effects (values:
:data:`Effect`), and the two drivers, :meth:`Flow.run` and :meth:`Flow.arun`, perform each with
the store's sync operations or await their async twins and send back the reply. The drivers are
the only place where the sync and async flows differ, and they differ only by ``await``: every
decision lives in the plans. A shell resolves its framework's request into a
:class:`~.request.Request`, drives :meth:`Flow.admission`, binds the outcome and, when the
response has ended, drives :meth:`Flow.settlement`.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ..config import AUTO
from ..context import Binding, Meter, Reserver, SessionCeiling, Untracked, current
from ..core.admission import Admission, AdmissionRequest, Settlement, Usage
from ..core.errors import (
    ErrorResponse,
    StoreLate,
    StoreUnavailable,
    budget_exceeded,
    identity_forbidden,
    identity_required,
    identity_signature_invalid,
    invalid_identity,
    rate_limited,
    store_unavailable,
)
from ..core.outage import Allowance
from ..core.resolve import (
    Resolved,
    identity_from_header,
    identity_from_user_field,
    model_from_body,
    resolve_auth,
    resolve_body,
)
from ..core.signing import SIGNATURE_HEADER, signature_problem
from ..core.tiers import Tier, tier_for, tightest
from ..core.validation import InvalidIdentity
from ..tier_requests import count_tier
from .allowance import AllowanceLedger, OutageLog, choose
from .ceilings import SessionSpend, session_value
from .request import Mark, Request

if TYPE_CHECKING:
    from ..config import Config, RequestFact
    from ..ratelimit import RateLimiter

try:
    from opentelemetry import trace as _trace
except ImportError:  # an optional dependency
    _trace: Any = None  # type: ignore[no-redef]

__all__ = ["ANONYMOUS", "LOOK_UP_AUTH", "Admit", "Auth", "ChargeSession", "Effect", "Flow", "HitLimit", "LookUpAuth",
           "Notices", "Outcome", "Plan", "Refused", "Settle", "Tracked", "ViewReservation", "aenter_view", "annotate",
           "enter_view", "view_entry"]

T = TypeVar("T")
logger = logging.getLogger("identity_middleware")


# -- the I/O a plan asks for, as values: a driver performs them, sync or async, and sends back the reply --

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
# The shell's auth lookup: its framework's authenticated user, else the app's resolver. An async
# shell may answer an awaitable (an async resolver, Django's ``request.auser()``).
Auth = Callable[[], object]


class Notices:
    """One flow's notices: configuration mistakes its shell meets while serving (the auth lookup
    finding no user at all), each logged the first time only, not once per request (a process
    serves one flow per app)."""

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


# -- what the flow decides for a request (its admission plan's value), and the decision on its span --
@dataclass(slots=True)
class Tracked:
    """Call the app; its usage goes to ``meter`` and is settled once when the response ends."""

    meter: Meter


@dataclass(frozen=True, slots=True)
class Refused:
    """Send ``error`` (400, 401, 429 or 503); the app is not called."""

    error: ErrorResponse


Outcome = Tracked | Untracked | Refused
ANONYMOUS = Untracked(None)

IDENTITY = "identity_middleware.identity"
DECISION = "identity_middleware.decision"


def annotate(outcome: Outcome) -> None:
    """The decision on the request's OpenTelemetry span, when ``opentelemetry-api`` is installed
    (without it this costs one ``None`` check per request): ``identity_middleware.identity`` and
    ``identity_middleware.decision`` (``tracked``, ``untracked``, ``anonymous`` or the refusal's
    error type) on the current span, if it records."""
    if _trace is None:
        return
    span = _trace.get_current_span()
    if not span.is_recording():
        return
    if isinstance(outcome, Tracked):
        identity: str | None = outcome.meter.identity.external_id
        decision = "tracked"
    elif isinstance(outcome, Refused):
        identity = None
        decision = json.loads(outcome.error.body)["error"]["type"]
    else:
        identity = outcome.external_id
        decision = "untracked" if identity is not None else "anonymous"
    if identity is not None:
        span.set_attribute(IDENTITY, identity)
    span.set_attribute(DECISION, decision)


class BadSignature(Exception):
    """An identity header without a valid signature, while ``signing_key`` requires one."""


class Flow:
    """The request flow under one :class:`~identity_middleware.config.Config`: its plans, and
    :meth:`run`/:meth:`arun` to drive one with the store's sync or async operations."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = config.store
        self._estimates = sorted(config.estimates.items(), key=lambda item: len(item[0]), reverse=True)
        self._allowances = AllowanceLedger()
        self._outage = OutageLog()
        self._policy = config.on_store_error
        self.notices = Notices()  # configuration mistakes seen while serving, said once
        self._required = config.require_identity
        self._identity_required = identity_required(config.sources)
        self._sources = config.sources
        self._may_act_for = config.may_act_for
        # Whether a plan may ask for the auth lookup: a shell need not make one otherwise.
        self.wants_auth = "auth" in config.sources or config.may_act_for is not None
        self._signing_key = config.signing_key
        self._project_from = config.project_from
        self._api_key_from = config.api_key_from
        self._create_missing = config.create_missing
        self._default_budgets = config.default_budgets
        # Steering: whether admission reports the budgets' figures, and what a tracked request gets.
        self._degrade = config.degrade
        self._report = config.degrade is not None or config.budget_headers
        self._steers = self._report or config.max_cost is not None or config.session is not None
        self._session = config.session
        self.limiter: RateLimiter | None = None
        if config.rate_limit or config.rate_limits:
            from ..ratelimit import RateLimiter  # `limits` is loaded only by apps that rate limit

            self.limiter = RateLimiter(config.rate_limit, config.rate_limits,
                                       storage_uri=config.store.rate_limit_storage_uri,
                                       strategy=config.rate_limit_strategy)

    def estimate_for(self, path: str) -> int:
        """The configured estimate of the longest path prefix matching ``path`` (0 when none)."""
        for prefix, estimate in self._estimates:
            if path.startswith(prefix):
                return estimate
        return 0

    # -- the two drivers: a plan's effects performed with the store's sync operations, or their async twins --
    def run(self, plan: Plan[T], auth: Auth | None = None) -> T:
        """Drive ``plan`` to its value with blocking calls (WSGI, sync Django)."""
        reply: Any = None
        failure: StoreUnavailable | None = None
        while True:
            try:
                effect: Effect = plan.send(reply) if failure is None else plan.throw(failure)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            reply, failure = None, None
            try:
                if type(effect) is Admit:
                    reply = self.store.admit(effect)
                elif type(effect) is Settle:
                    self.store.settle(effect.settlement)
                elif type(effect) is HitLimit:
                    assert self.limiter is not None
                    reply = self.limiter.hit(effect.external_id)
                elif type(effect) is ChargeSession:
                    effect.session.charge(effect.cost)
                elif auth is not None:
                    reply = auth()
                    if inspect.isawaitable(reply):
                        _close(reply)
                        raise TypeError("a sync request cannot await its resolver: make it a plain function")
            except StoreUnavailable as error:
                failure = error

    async def arun(self, plan: Plan[T], auth: Auth | None = None) -> T:
        """Drive ``plan`` to its value awaiting the async twins (ASGI, async Django)."""
        reply: Any = None
        failure: StoreUnavailable | None = None
        while True:
            try:
                effect: Effect = plan.send(reply) if failure is None else plan.throw(failure)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            reply, failure = None, None
            try:
                if type(effect) is Admit:
                    reply = await self.store.aadmit(effect)
                elif type(effect) is Settle:
                    await self.store.asettle(effect.settlement)
                elif type(effect) is HitLimit:
                    assert self.limiter is not None
                    reply = await self.limiter.ahit(effect.external_id)
                elif type(effect) is ChargeSession:
                    await effect.session.acharge(effect.cost)
                elif auth is not None:
                    reply = auth()
                    if inspect.isawaitable(reply):
                        reply = await reply
            except StoreUnavailable as error:
                failure = error

    # -- admission -------------------------------------------------------------------------------
    def admission(self, request: Request) -> Plan[Outcome]:
        """Resolve, validate, rate limit and admit: what to do with the request."""
        try:
            resolved: Resolved | None = None
            principal: Resolved | None = None
            for source in self._sources:
                if source == "body":
                    resolved = resolve_body(request.body) if request.body else None
                elif source == "header":
                    resolved = self._header_identity(request)
                elif source == "user_field":
                    found = identity_from_user_field(request.body) if request.body else None
                    resolved = Resolved(found, "user_field") if found is not None else None
                elif source == "auth":
                    resolved = principal = resolve_auth((yield LOOK_UP_AUTH))
                if resolved is not None:
                    break
            if resolved is not None and self._may_act_for is not None and resolved.source != "auth":
                principal = resolve_auth((yield LOOK_UP_AUTH))
                if principal is not None and principal.external_id != resolved.external_id \
                        and not self._may_act_for(principal.external_id, resolved.external_id):
                    return Refused(identity_forbidden(principal.external_id, resolved.external_id))
        except InvalidIdentity as error:
            return Refused(invalid_identity(error))
        except BadSignature as error:
            return Refused(identity_signature_invalid(str(error)))
        mark = request.mark
        required = self._required or (mark is not None and mark.require_identity)
        if resolved is None:
            return Refused(self._identity_required) if required else ANONYMOUS
        estimate = mark.estimate if mark is not None else 0
        auto = mark is not None and mark.auto
        if not estimate and not auto and self._estimates:
            estimate = self.estimate_for(request.path)
            auto = estimate == AUTO
        if auto:
            estimate = self._estimate_from(request.body)
        # Positional, in field order (per request: keywords cost more): external_id, upsert,
        # create_missing, estimate, default_budgets, refused, now, last_source.
        asked = AdmissionRequest(resolved.external_id, resolved.upsert, self._create_missing, estimate,
                                 self._default_budgets, False, None, resolved.source)
        fallback_tiers: tuple[Tier, ...] = ()
        if self._report:
            asked.consumed = True
            if auto and estimate > 0 and self._degrade is not None:
                fallback_tiers, asked.fallbacks = self._fallbacks(request.body, estimate)
        try:
            if self.limiter is not None:
                exceeded = yield HitLimit(resolved.external_id)
                if exceeded is not None:
                    asked.estimate, asked.refused = 0, True
                    yield asked  # Admit: upserted, counted
                    self._answered()
                    return Refused(rate_limited(resolved.external_id, exceeded.limit, exceeded.retry_after,
                                                exceeded.headers))
            # The body's model matters only to model/provider budgets: decoded only when the store has some.
            if request.body and self.store.wants_model:
                asked.model = model_from_body(request.body)
            if self._project_from is not None or self._api_key_from is not None:
                asked.project = self._fact(self._project_from, request)
                asked.api_key = self._fact(self._api_key_from, request)
            if request.headers is not None and self.store.wants_headers:
                asked.headers = request.headers(request.native)
            admission: Admission = yield asked  # Admit
        except StoreUnavailable as error:
            return self._during_outage(error, resolved.external_id, request, estimate, mark is not None)
        if self._outage.down:  # tested here: a call fewer per request while no outage is logged
            self._answered()
        if self._allowances.requests and not self.store.partly_down:
            self._allowances.ended()  # the outage is over: what was admitted meanwhile is being written
        identity = admission.identity
        if identity is None:  # unknown, and not created (create_missing=False)
            return Refused(self._identity_required) if required else Untracked(resolved.external_id)
        if admission.blocked is not None:
            return Refused(budget_exceeded(identity.external_id, admission.blocked))
        # Positional, in field order (a class called with keywords builds a dict: ~1,400 instructions):
        # identity, reservation, usage, budgeted, counted, reserver, allowance, charged.
        meter = Meter(identity, admission.reservation, Usage(), mark is not None, False, self, None, admission.charged)
        if self._steers or (mark is not None and mark.max_cost is not None):  # a view's ceiling alone
            self._steer(meter, admission, fallback_tiers, request)
        return Tracked(meter)

    def _fallbacks(self, body: bytes | None, estimate: int) -> tuple[tuple[Tier, ...], tuple[int, ...]]:
        """The degrade tiers whose estimate of the body's call is below ``estimate``, and those
        estimates, in tier order: the store admits with the first that fits when ``estimate`` does not."""
        assert self._degrade is not None and body
        from ..estimate import tier_estimates

        tiers = self._degrade.tiers
        found = [(tier, cost) for tier, cost in zip(tiers, tier_estimates(body, tiers, self.config.prices), strict=True)
                 if cost is not None and 0 < cost < estimate]
        return tuple(tier for tier, _ in found), tuple(cost for _, cost in found)

    def _steer(self, meter: Meter, admission: Admission, fallback_tiers: tuple[Tier, ...], request: Request) -> None:
        """The admitted request's tier, tightest budget, cost ceiling and session (see docs/steering.md)."""
        consumed = admission.consumed
        if self._degrade is not None:
            tier = tier_for(consumed, self._degrade)
            if admission.fallback:  # admitted only at a tier's estimate: at least that tier
                chosen = fallback_tiers[admission.fallback - 1]
                if tier is None or chosen.at > tier.at:
                    tier = chosen
            if tier is not None:
                meter.tier = tier
                count_tier(tier.name)
        if self.config.budget_headers:
            meter.budget = tightest(consumed)
        mark = request.mark
        meter.ceiling = mark.max_cost if mark is not None and mark.max_cost is not None else self.config.max_cost
        if self._session is not None:
            key = session_value(self._session, request)
            if key is not None:
                meter.session = SessionSpend(self.store, meter.identity.external_id, key, self._session)

    @staticmethod
    def _fact(source: RequestFact | None, request: Request) -> str | None:
        """The request's project or API key: the named header's value, or the app's callable's
        answer (a str, else none); at most 255 characters, as budget targets are."""
        if source is None:
            return None
        found = request.header(source) if isinstance(source, str) else source(request.native)
        if not isinstance(found, str):
            return None
        found = found.strip()
        return found if 0 < len(found) <= 255 else None

    def _estimate_from(self, body: bytes | None) -> int:
        """``estimate="auto"``: the most the call in the body could cost (0 when it cannot tell)."""
        if not body:
            return 0
        from ..estimate import estimate_from_body  # prices are loaded only by apps that estimate

        return estimate_from_body(body, self.config.prices) or 0

    def _header_identity(self, request: Request) -> Resolved | None:
        for name in self.config.header_names:
            external_id = identity_from_header(request.header(name), name)
            if external_id is not None:
                if self._signing_key is not None:
                    problem = signature_problem(self._signing_key, external_id, request.header(SIGNATURE_HEADER),
                                                time.time())
                    if problem is not None:
                        raise BadSignature(problem)
                return Resolved(external_id, "header")
        return None

    def _during_outage(self, error: StoreUnavailable, external_id: str, request: Request, estimate: int,
                       budgeted: bool) -> Outcome:
        """The outage policy for this identity (:mod:`.allowance`): "closed" refuses with 503, "open"
        lets the request through untracked (the view sees ``current_identity()`` as ``None``), an
        :class:`Allowance` meters it locally while its amount lasts, then refuses. A store that is
        only late (:class:`StoreLate`: not known to be down) refuses with 503 under any policy: a
        slow process must not let requests through unmetered."""
        if isinstance(error, StoreLate):
            return Refused(store_unavailable())
        self._outage.failed(error)
        policy = choose(self._policy, external_id, request)
        if policy == "open":
            return Untracked(external_id)
        if isinstance(policy, Allowance):
            identity = self.store.known_identity(external_id)
            if identity is not None and self._allowances.admit(external_id, max(estimate, 0), policy):
                meter = Meter(identity, None, budgeted=budgeted, reserver=self, allowance=max(estimate, 0))
                self._steer(meter, Admission(identity), (), request)  # ceilings hold; no figures, no tier
                return Tracked(meter)
        return Refused(store_unavailable())

    def _unavailable(self, error: StoreUnavailable) -> Refused | None:
        """A view's own reservation meeting an outage: refused (503) unless the policy is "open"
        for everyone; a request already admitted by an allowance keeps to what it held."""
        if isinstance(error, StoreLate) or self._policy != "open":
            if not isinstance(error, StoreLate):
                self._outage.failed(error)
            return Refused(store_unavailable())
        self._outage.failed(error)
        return None

    # -- a view's own estimate, when admission could not see its mark -----------------------------
    def reservation(self, meter: Meter, estimate: int) -> Plan[ErrorResponse | None]:
        """Hold ``estimate`` for the request of ``meter`` (see :func:`view_entry`)."""
        meter.budgeted = True
        request = AdmissionRequest(meter.identity.external_id, create_missing=False, estimate=estimate)
        try:
            admission: Admission = yield request  # Admit
        except StoreUnavailable as error:
            refused = self._unavailable(error)
            return refused.error if refused is not None else None
        self._answered()
        if admission.blocked is not None:
            meter.counted = True  # the store counted the blocked request and its error
            return budget_exceeded(meter.identity.external_id, admission.blocked)
        if admission.reservation is not None:
            meter.reservation = admission.reservation
        return None

    # -- settlement: the plan, and its one effect performed in place (sync or async) ---------------------
    def settlement(self, meter: Meter, *, error: bool) -> Plan[None]:
        """Commit the request's usage exactly once (later calls do nothing)."""
        settlement = self._take(meter, error)
        if settlement is None:
            return
        try:
            yield Settle(settlement)
        except StoreUnavailable as failure:
            self._settle_failed(failure)
        else:
            self._settled(meter)
        if meter.session is not None:
            yield ChargeSession(meter.session, settlement.usage.cost)

    def settle(self, meter: Meter, *, error: bool) -> None:
        """``run(settlement(meter, error=error))`` in one call: the same steps, its one effect
        performed in place with the store's sync ``settle``. Per request, driving a plan costs
        more than the rest."""
        # _take's bookkeeping is for a request an allowance admitted: the others take their settlement directly
        settlement = meter.take(error) if meter.allowance is None else self._take(meter, error)
        if settlement is None:
            return
        try:
            self.store.settle(settlement)
        except StoreUnavailable as failure:
            self._settle_failed(failure)
        else:
            if self._outage.down:  # tested here: calls fewer per request while no outage is logged
                self._settled(meter)
        if meter.session is not None:
            meter.session.charge(settlement.usage.cost)

    async def asettle(self, meter: Meter, *, error: bool) -> None:
        """:meth:`settle` with the store's ``asettle``."""
        # _take's bookkeeping is for a request an allowance admitted: the others take their settlement directly
        settlement = meter.take(error) if meter.allowance is None else self._take(meter, error)
        if settlement is None:
            return
        try:
            await self.store.asettle(settlement)
        except StoreUnavailable as failure:
            self._settle_failed(failure)
        else:
            if self._outage.down:  # tested here: calls fewer per request while no outage is logged
                self._settled(meter)
        if meter.session is not None:
            await meter.session.acharge(settlement.usage.cost)

    def _take(self, meter: Meter, error: bool) -> Settlement | None:
        """The request's settlement, the first time only; a request an allowance admitted gives
        back what it held of the allowance."""
        settlement = meter.take(error)
        if settlement is not None and meter.allowance is not None:
            self._allowances.settled(meter.identity.external_id, meter.allowance, settlement.usage.cost)
        return settlement

    def _settled(self, meter: Meter) -> None:
        # An allowance's settlement is buffered until the store answers: no sign that it is back.
        if meter.allowance is None:
            self._answered()

    def _answered(self) -> None:
        """The store answered: a logged outage is over, unless part of the store is still known to be
        down (a Cluster master failing over while the others answer: ``Store.partly_down``)."""
        if self._outage.down and not self.store.partly_down:
            self._outage.ok()

    def _settle_failed(self, failure: StoreUnavailable) -> None:
        self._outage.failed(failure)  # the store keeps what it could not write, and retries

    # -- a Reserver, for a view's own estimate --------------------------------------------------------
    def reserve(self, meter: Meter, estimate: int) -> ErrorResponse | None:
        """:class:`~identity_middleware.context.Reserver`: hold a view's own estimate."""
        return self.run(self.reservation(meter, estimate))

    async def areserve(self, meter: Meter, estimate: int) -> ErrorResponse | None:
        return await self.arun(self.reservation(meter, estimate))


# -- entering a ``@budgeted`` view: its own reservation, when admission could not see its mark ----------
@dataclass(frozen=True, slots=True)
class ViewReservation:
    """A view's estimate still to hold, by whatever admitted the request: :meth:`make` from a
    sync view, :meth:`amake` from an async one; either answers an error to send, or ``None``."""

    meter: Meter
    reserver: Reserver
    estimate: int

    def make(self) -> ErrorResponse | None:
        return self.reserver.reserve(self.meter, self.estimate)

    async def amake(self) -> ErrorResponse | None:
        return await self.reserver.areserve(self.meter, self.estimate)


def view_entry(binding: Binding | None, mark: Mark) -> ErrorResponse | ViewReservation | None:
    """Entering a ``@budgeted`` view: an error to send instead, a reservation still to make, or
    ``None`` to call the view.

    Admission applies the mark when the shell found it by routing; otherwise the view reserves
    its estimate itself. A request without a meter is refused only when the view needs an
    identity and the request named none: one let through untracked (the store down under the
    "open" policy) still reaches the view.
    """
    if not isinstance(binding, Meter):
        named = binding is not None and binding.external_id is not None
        return identity_required() if mark.require_identity and not named else None
    if mark.max_cost is not None:
        binding.ceiling = mark.max_cost
    if binding.budgeted or not mark.estimate or binding.reserver is None:
        return None
    return ViewReservation(binding, binding.reserver, mark.estimate)


def enter_view(mark: Mark) -> ErrorResponse | None:
    """:func:`view_entry` for the request being served, its reservation made: the error to send, or ``None``."""
    entry = view_entry(current(), mark)
    return entry.make() if isinstance(entry, ViewReservation) else entry


async def aenter_view(mark: Mark) -> ErrorResponse | None:
    entry = view_entry(current(), mark)
    return await entry.amake() if isinstance(entry, ViewReservation) else entry


def _close(awaitable: object) -> None:
    close = getattr(awaitable, "close", None)  # a coroutine never awaited warns unless closed
    if close is not None:
        close()
