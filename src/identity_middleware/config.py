"""The middleware's options: declared once, validated once, shared by every shell and Django settings."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .core.models import Budget
from .core.money import to_nanos
from .core.outage import OutagePolicy, is_policy
from .stores.base import Store
from .stores.memory import MemoryStore

__all__ = ["AUTO", "DEFAULT_HEADER_NAMES", "DEFAULT_SOURCES", "SOURCES", "Config", "OutagePolicy"]

DEFAULT_HEADER_NAMES = ("X-Identity-Id", "X-ORQ-IDENTITY-ID")
DEFAULT_SOURCES = ("body", "header", "auth")
SOURCES = ("body", "header", "auth", "user_field")
AUTO = -1  # an estimate of "auto": priced from the request body when the request comes


def estimate_nanos(amount: object) -> int:
    """An estimate as nano-USD, or :data:`AUTO` for ``"auto"``."""
    if amount == "auto":
        return AUTO
    return to_nanos(amount)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Config:
    """Every option of ``IdentityMiddleware``, ``IdentityWSGIMiddleware`` and Django's
    ``settings.IDENTITY_MIDDLEWARE`` (keys are the names upper-cased: ``REQUIRE_IDENTITY``).

    The shells take these as keyword arguments. Convenient spellings are normalised here, once:
    ``default_budgets`` as ``Budget`` objects, dicts or ``{"daily": "0.20"}``; ``estimates`` as
    ``{path prefix: USD}`` with USD a ``Decimal``, ``str`` or number (kept as nano-USD).
    """

    store: Store = field(default_factory=MemoryStore)
    require_identity: bool = False
    header_names: tuple[str, ...] = DEFAULT_HEADER_NAMES
    max_body_size: int = 1_048_576
    default_budgets: tuple[Budget, ...] = ()
    rate_limit: str | None = None  # e.g. "100/minute" or "10/second;1000/day", per identity
    rate_limits: Mapping[str, str] = field(default_factory=dict)  # external id -> its own limit
    rate_limit_strategy: str = "moving-window"
    # While the store is down: "open" (through untracked: current_identity() is None in the view),
    # "closed" (503), Allowance("0.50") (metered locally up to that much per identity and process),
    # or (external_id, request) -> one of those; see flow/allowance.py. A store that is only slow is
    # not down: a late admission is a 503 whatever this says.
    on_store_error: OutagePolicy = "open"
    create_missing: bool = True  # create a header/auth identity on its first request
    estimates: Mapping[str, int] = field(default_factory=dict)  # path prefix -> nano-USD to reserve
    resolver: Callable[[Any], object] | None = None  # (scope | environ | request) -> id, IdentityInput or None
    # Who may name an identity (see SECURITY.md): the sources accepted, first that yields wins;
    # "user_field" is OpenAI's `safety_identifier`/`user` and Anthropic's `metadata.user_id` in the body.
    sources: tuple[str, ...] = DEFAULT_SOURCES
    may_act_for: Callable[[str, str], bool] | None = None  # (authenticated principal, claimed id) -> allowed
    signing_key: str | bytes | None = None  # identity headers only with a valid X-Identity-Signature
    body_timeout: float | None = 30.0  # seconds to read a JSON body we sniff; then 408 (ASGI)
    # App prices for estimate="auto" (PriceTable or {model: (input, output) USD per 1M tokens}); else genai-prices.
    prices: Any = None
    # Model and provider budgets: the provider of model names without a "provider/" prefix.
    providers: Mapping[str, str] = field(default_factory=dict)  # e.g. {"gpt-4o": "openai"}
    # Budget threshold alerts: notifier id -> URL (signed JSON POST) or callable(event).
    notifiers: Mapping[str, Any] = field(default_factory=dict)
    notifier_secret: str | bytes | None = None

    def __post_init__(self) -> None:
        if self.store is None:
            object.__setattr__(self, "store", MemoryStore())
        if not isinstance(self.store, Store):
            raise TypeError(f"store must be a Store (MemoryStore(), RedisStore.from_url(...)), not {self.store!r}")
        if not is_policy(self.on_store_error):
            raise ValueError('on_store_error must be "open", "closed", an Allowance, or a callable '
                             "(external_id, request) -> one of those")
        if not isinstance(self.max_body_size, int) or self.max_body_size < 0:
            raise ValueError("max_body_size must be a non-negative number of bytes")
        if isinstance(self.header_names, str):
            raise ValueError("header_names is a list or tuple of names")
        if isinstance(self.sources, str) or not self.sources or not set(self.sources) <= set(SOURCES) \
                or len(set(self.sources)) != len(tuple(self.sources)):
            raise ValueError(f"sources: one or more of {SOURCES}, each once, in the order they are tried")
        if self.may_act_for is not None and not callable(self.may_act_for):
            raise TypeError("may_act_for must be callable: (principal, claimed) -> bool")
        if self.body_timeout is not None and not self.body_timeout > 0:
            raise ValueError("body_timeout must be a positive number of seconds (or None: no limit)")
        if self.resolver is not None and not callable(self.resolver):
            raise TypeError("resolver must be callable")
        object.__setattr__(self, "header_names", tuple(self.header_names))
        object.__setattr__(self, "sources", tuple(self.sources))
        object.__setattr__(self, "default_budgets", _budgets(self.default_budgets))
        object.__setattr__(self, "rate_limits", dict(self.rate_limits or {}))
        object.__setattr__(self, "estimates", {path: estimate_nanos(amount)
                                               for path, amount in (self.estimates or {}).items()})
        object.__setattr__(self, "providers", dict(self.providers or {}))
        object.__setattr__(self, "notifiers", dict(self.notifiers or {}))
        if self.providers or self.notifiers:
            from .stores.notifiers import Notifiers

            notify = Notifiers(self.notifiers, self.notifier_secret) if self.notifiers else None
            self.store.configure_budgets(providers=self.providers or None, notify=notify)

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return tuple(option.name for option in fields(cls))

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], **given: Any) -> Config:
        """From upper-cased keys (``{"REQUIRE_IDENTITY": True}``); keys not naming an option are
        ignored here (Django's system checks warn about them); ``given`` wins over ``settings``."""
        names = cls.option_names()
        options = {key.lower(): value for key, value in settings.items() if key.lower() in names}
        return cls(**{**options, **given})


def _budgets(value: object) -> tuple[Budget, ...]:
    if value is None:
        return ()
    if isinstance(value, Mapping):
        return tuple(Budget(period=period, amount=amount) for period, amount in value.items())
    if not isinstance(value, Iterable) or isinstance(value, str | bytes):
        raise TypeError("default_budgets: Budget objects, dicts, or a {period: amount} mapping")
    return tuple(item if isinstance(item, Budget) else Budget.model_validate(item) for item in value)
