"""One request's life without a framework: admit (rate limit, budgets, reservation), then settle."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from .context import Meter
from .core.admission import Admission, AdmissionRequest, Settlement
from .core.errors import (
    ErrorResponse,
    StoreUnavailable,
    budget_exceeded,
    identity_required,
    rate_limited,
    store_unavailable,
)
from .core.models import Budget
from .core.money import Money, to_nanos
from .core.resolve import Resolved
from .ratelimit import RateLimiter
from .stores.base import Store
from .stores.memory import MemoryStore

if TYPE_CHECKING:
    pass

__all__ = ["DEFAULT_HEADER_NAMES", "Gate", "GateConfig", "GateOptions", "OutagePolicy"]

logger = logging.getLogger("identity_middleware")

DEFAULT_HEADER_NAMES = ("X-Identity-Id", "X-ORQ-IDENTITY-ID")
OutagePolicy = Literal["open", "closed"]


def _budgets(value: Iterable[Budget | Mapping[str, Any]] | Mapping[str, Money] | None) -> tuple[Budget, ...]:
    """Budgets given as ``Budget`` objects, dicts, or ``{"daily": "0.20"}``."""
    if value is None:
        return ()
    if isinstance(value, Mapping):
        return tuple(Budget(period=period, amount=amount) for period, amount in value.items())
    return tuple(item if isinstance(item, Budget) else Budget.model_validate(item) for item in value)


class GateOptions(TypedDict, total=False):
    """The middleware keyword options, shared by every shell (defaults in :meth:`GateConfig.build`)."""

    store: Store | None
    require_identity: bool
    header_names: Sequence[str]
    max_body_size: int
    default_budgets: Iterable[Budget | Mapping[str, Any]] | Mapping[str, Money] | None
    rate_limit: str | None
    rate_limits: Mapping[str, str] | None
    rate_limit_strategy: str
    on_store_error: OutagePolicy
    create_missing: bool
    estimates: Mapping[str, Money] | None
    resolver: Callable[..., Any] | None


@dataclass(frozen=True)
class GateConfig:
    """The middleware's options, shared by the ASGI, WSGI and Django shells."""

    store: Store = field(default_factory=MemoryStore)
    require_identity: bool = False
    header_names: tuple[str, ...] = DEFAULT_HEADER_NAMES
    max_body_size: int = 1_048_576
    default_budgets: tuple[Budget, ...] = ()
    rate_limit: str | None = None
    rate_limits: Mapping[str, str] = field(default_factory=dict)
    rate_limit_strategy: str = "moving-window"
    on_store_error: OutagePolicy = "open"
    create_missing: bool = True
    estimates: Mapping[str, int] = field(default_factory=dict)  # path prefix -> nano-USD
    resolver: Callable[..., Any] | None = None

    @classmethod
    def build(
        cls,
        *,
        store: Store | None = None,
        require_identity: bool = False,
        header_names: Sequence[str] = DEFAULT_HEADER_NAMES,
        max_body_size: int = 1_048_576,
        default_budgets: Iterable[Budget | Mapping[str, Any]] | Mapping[str, Money] | None = None,
        rate_limit: str | None = None,
        rate_limits: Mapping[str, str] | None = None,
        rate_limit_strategy: str = "moving-window",
        on_store_error: OutagePolicy = "open",
        create_missing: bool = True,
        estimates: Mapping[str, Money] | None = None,
        resolver: Callable[..., Any] | None = None,
    ) -> GateConfig:
        """Validate and normalise user-facing options (money as Decimal/str, budgets as dicts)."""
        if on_store_error not in ("open", "closed"):
            raise ValueError('on_store_error must be "open" or "closed"')
        if max_body_size < 0:
            raise ValueError("max_body_size must not be negative")
        if not header_names:
            raise ValueError("header_names needs at least one header")
        return cls(
            store=store if store is not None else MemoryStore(),
            require_identity=require_identity,
            header_names=tuple(header_names),
            max_body_size=max_body_size,
            default_budgets=_budgets(default_budgets),
            rate_limit=rate_limit,
            rate_limits=dict(rate_limits or {}),
            rate_limit_strategy=rate_limit_strategy,
            on_store_error=on_store_error,
            create_missing=create_missing,
            estimates={path: to_nanos(amount) for path, amount in (estimates or {}).items()},
            resolver=resolver,
        )


class _OutageLog:
    """Logs a store outage once when it starts and once when it ends, not once per request."""

    def __init__(self) -> None:
        self._down = False
        self._lock = threading.Lock()

    def failed(self, error: BaseException) -> None:
        with self._lock:
            if self._down:
                return
            self._down = True
        logger.error("identity store unavailable (%s); further failures are not logged until it recovers",
                     error)

    def ok(self) -> None:
        if self._down:
            with self._lock:
                if not self._down:
                    return
                self._down = False
            logger.warning("identity store available again")


class Gate:
    """The framework-free request flow. Shells resolve the identity, then call
    :meth:`admit`/:meth:`aadmit` and, once the response has ended, :meth:`settle`/:meth:`asettle`.

    ``admit`` answers a :class:`Meter` (tracked: call the app), an :class:`ErrorResponse` (send it,
    do not call the app) or ``None`` (untracked: call the app).
    """

    def __init__(self, config: GateConfig) -> None:
        self.config = config
        self.store = config.store
        limiter = RateLimiter(config.rate_limit, config.rate_limits,
                              storage_uri=config.store.rate_limit_storage_uri,
                              strategy=config.rate_limit_strategy)
        self.limiter = limiter if limiter else None
        self.header_names = config.header_names
        self._estimates = sorted(config.estimates.items(), key=lambda item: len(item[0]), reverse=True)
        self._outage = _OutageLog()

    # -- admission -------------------------------------------------------------------------------
    def estimate_for(self, path: str) -> int:
        """The configured estimate of the longest path prefix matching ``path`` (0 when none)."""
        for prefix, estimate in self._estimates:
            if path.startswith(prefix):
                return estimate
        return 0

    def _request(self, resolved: Resolved, estimate: int, refused: bool = False) -> AdmissionRequest:
        return AdmissionRequest(
            external_id=resolved.external_id,
            upsert=resolved.upsert,
            create_missing=self.config.create_missing,
            estimate=estimate,
            default_budgets=self.config.default_budgets,
            refused=refused,
        )

    def _outcome(self, admission: Admission, require: bool, budgeted: bool) -> Meter | ErrorResponse | None:
        identity = admission.identity
        if identity is None:
            return identity_required() if require else None
        if admission.blocked is not None:
            return budget_exceeded(identity.external_id, admission.blocked)
        return Meter(identity, admission.reservation, budgeted=budgeted, gate=self)

    def _unavailable(self, error: BaseException) -> ErrorResponse | None:
        self._outage.failed(error)
        return store_unavailable() if self.config.on_store_error == "closed" else None

    def _required(self, require: bool | None) -> bool:
        return self.config.require_identity if require is None else require

    def admit(
        self, resolved: Resolved | None, *, estimate: int = 0, require: bool | None = None, budgeted: bool = False
    ) -> Meter | ErrorResponse | None:
        required = self._required(require)
        if resolved is None:
            return identity_required() if required else None
        try:
            if self.limiter is not None:
                exceeded = self.limiter.hit(resolved.external_id)
                if exceeded is not None:
                    self.store.admit(self._request(resolved, 0, refused=True))
                    self._outage.ok()
                    return rate_limited(resolved.external_id, exceeded.limit, exceeded.retry_after,
                                        exceeded.headers)
            admission = self.store.admit(self._request(resolved, estimate))
        except StoreUnavailable as error:
            return self._unavailable(error)
        self._outage.ok()
        return self._outcome(admission, required, budgeted)

    async def aadmit(
        self, resolved: Resolved | None, *, estimate: int = 0, require: bool | None = None, budgeted: bool = False
    ) -> Meter | ErrorResponse | None:
        required = self._required(require)
        if resolved is None:
            return identity_required() if required else None
        try:
            if self.limiter is not None:
                exceeded = await self.limiter.ahit(resolved.external_id)
                if exceeded is not None:
                    await self.store.aadmit(self._request(resolved, 0, refused=True))
                    self._outage.ok()
                    return rate_limited(resolved.external_id, exceeded.limit, exceeded.retry_after,
                                        exceeded.headers)
            admission = await self.store.aadmit(self._request(resolved, estimate))
        except StoreUnavailable as error:
            return self._unavailable(error)
        self._outage.ok()
        return self._outcome(admission, required, budgeted)

    # -- a view's own estimate, when the shell could not see it before the view ran --------------
    def reserve(self, meter: Meter, estimate: int) -> ErrorResponse | None:
        """Hold ``estimate`` for a view that declares one (``@budgeted``) when admission did not."""
        try:
            admission = self.store.admit(AdmissionRequest(meter.identity.external_id, create_missing=False,
                                                          estimate=estimate))
        except StoreUnavailable as error:
            return self._unavailable(error)
        return self._reserved(meter, admission)

    async def areserve(self, meter: Meter, estimate: int) -> ErrorResponse | None:
        try:
            admission = await self.store.aadmit(AdmissionRequest(meter.identity.external_id,
                                                                 create_missing=False, estimate=estimate))
        except StoreUnavailable as error:
            return self._unavailable(error)
        return self._reserved(meter, admission)

    def _reserved(self, meter: Meter, admission: Admission) -> ErrorResponse | None:
        self._outage.ok()
        meter.budgeted = True
        if admission.blocked is not None:
            meter.counted = True  # the store counted the blocked request and its error
            return budget_exceeded(meter.identity.external_id, admission.blocked)
        if admission.reservation is not None:
            meter.reservation = admission.reservation
        return None

    # -- settlement ------------------------------------------------------------------------------
    def _settlement(self, meter: Meter, error: bool) -> Settlement | None:
        if meter.counted:
            return None
        with meter.lock:
            meter.counted = True
            usage = meter.usage
            usage.error = usage.error or error
        return Settlement(meter.identity.id, usage, meter.reservation)

    def settle(self, meter: Meter, *, error: bool) -> None:
        """Commit the request's usage exactly once (later calls do nothing)."""
        settlement = self._settlement(meter, error)
        if settlement is None:
            return
        try:
            self.store.settle(settlement)
        except StoreUnavailable as failure:
            self._outage.failed(failure)  # the store keeps what it could not write, and retries
        else:
            self._outage.ok()

    async def asettle(self, meter: Meter, *, error: bool) -> None:
        settlement = self._settlement(meter, error)
        if settlement is None:
            return
        try:
            await self.store.asettle(settlement)
        except StoreUnavailable as failure:
            self._outage.failed(failure)
        else:
            self._outage.ok()
