"""The middleware's options: declared once (typed), validated once, shared by every shell and Django settings."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from .core.ceilings import Session, ceiling_nanos
from .core.models import Budget
from .core.money import Money, to_nanos
from .core.options import Invalid as _Invalid
from .core.options import InvalidOption, Problem, checked, normalise
from .core.options import invalid as _invalid
from .core.options import mapping as _mapping
from .core.options import secret as _secret
from .core.outage import OutagePolicy, is_policy
from .core.tiers import Degrade, Tier, degrade_of
from .stores.options import NORMALISERS as STORE_NORMALISERS
from .stores.options import STORE_OPTIONS, moved

if TYPE_CHECKING:
    from .stores.base import Store

__all__ = ["AUTO", "DEFAULT_HEADER_NAMES", "DEFAULT_SOURCES", "SOURCES", "Config", "InvalidOption", "Options",
           "OutagePolicy", "Problem", "RequestFact", "Source", "problems"]

DEFAULT_HEADER_NAMES = ("X-Identity-Id", "X-ORQ-IDENTITY-ID")
Source = Literal["body", "header", "auth", "user_field"]
DEFAULT_SOURCES: tuple[Source, ...] = ("body", "header", "auth")
SOURCES: tuple[Source, ...] = ("body", "header", "auth", "user_field")
AUTO = -1  # an estimate of "auto": priced from the request body when the request comes
RATE_LIMIT_STRATEGIES = ("moving-window", "fixed-window", "sliding-window-counter")
# Where a request's project or API key comes from: a header's name, or a callable over the
# framework's request (ASGI scope, WSGI environ, Django HttpRequest) answering a str or None.
RequestFact = str | Callable[[Any], str | None]


class Options(TypedDict, total=False):
    """The keyword options of ``IdentityMiddleware`` and ``IdentityWSGIMiddleware`` as a user writes
    them (``**options: Unpack[Options]``: type checkers and IDEs list them, a misspelt one is an
    error). Django's ``settings.IDENTITY_MIDDLEWARE`` takes the same, upper-cased. :class:`Config`
    holds them validated and normalised."""

    store: Store | None  # MemoryStore() when not given
    require_identity: bool
    header_names: Sequence[str]
    max_body_size: int
    default_budgets: Mapping[str, Money] | Iterable[Budget | Mapping[str, Any]] | None  # {"daily": "0.20"}
    rate_limit: str | None  # e.g. "100/minute" or "10/second;1000/day", per identity
    rate_limits: Mapping[str, str] | None  # external id -> its own limit
    rate_limit_strategy: Literal["moving-window", "fixed-window", "sliding-window-counter"]
    # While the store is down: "open" (through untracked: current_identity() is None in the view),
    # "closed" (503), Allowance("0.50") (metered locally up to that much per identity and process),
    # or (external_id, request) -> one of those; see flow/allowance.py. A store that is only slow is
    # not down: a late admission is a 503 whatever this says.
    on_store_error: OutagePolicy
    create_missing: bool  # create a header/auth identity on its first request
    estimates: Mapping[str, Money] | None  # path prefix -> USD to reserve, or "auto"
    resolver: Callable[[Any], object] | None  # (scope | environ | request) -> id, IdentityInput or None
    sources: Sequence[Source]  # who may name an identity, first that yields wins (see SECURITY.md)
    may_act_for: Callable[[str, str], bool] | None  # (authenticated principal, claimed id) -> allowed
    signing_key: str | bytes | None  # identity headers only with a valid X-Identity-Signature
    body_timeout: float | None  # seconds to read a JSON body we sniff; then 408 (ASGI)
    prices: Any  # app prices for estimate="auto": a PriceTable or {model: (input, output) USD per 1M tokens}
    # Steering (docs/steering.md): degrade tiers by consumed share, for the tightest budget
    # ([Tier(...), ...]) or per budget ({"monthly": [Tier(...)]}); every request's LLM cost ceiling
    # (USD); a session's (Session(max_cost, header=... | field=...)); RateLimit headers on answers.
    degrade: Sequence[Tier] | Mapping[str, Sequence[Tier]] | None
    max_cost: Money | None
    session: Session | None
    budget_headers: bool
    # A request's project and API key (project and API-key budgets, CEL's `project`/`api_key`): a
    # header's name, or (scope | environ | request) -> str or None. Headers are the caller's word.
    project_from: RequestFact | None
    api_key_from: RequestFact | None


@dataclass(frozen=True)
class Config:
    """Every option, validated and normalised (``default_budgets`` as ``Budget`` objects,
    ``estimates`` as nano-USD, sequences as tuples). Building one has no side effect: the store it
    is given is used as it is. Shells build it with :meth:`of` from their keyword options; Django
    with :meth:`from_settings` (keys are the names upper-cased: ``REQUIRE_IDENTITY``)."""

    store: Store = field(default_factory=lambda: _memory_store())
    require_identity: bool = False
    header_names: tuple[str, ...] = DEFAULT_HEADER_NAMES
    max_body_size: int = 1_048_576
    default_budgets: tuple[Budget, ...] = ()
    rate_limit: str | None = None
    rate_limits: Mapping[str, str] = field(default_factory=dict)
    rate_limit_strategy: str = "moving-window"
    # While the store is down: "open" (through untracked: current_identity() is None in the view),
    # "closed" (503), Allowance("0.50") (metered locally up to that much per identity and process),
    # or (external_id, request) -> one of those; see flow/allowance.py. A store that is only slow is
    # not down: a late admission is a 503 whatever this says.
    on_store_error: OutagePolicy = "open"
    create_missing: bool = True
    estimates: Mapping[str, int] = field(default_factory=dict)  # path prefix -> nano-USD (or AUTO)
    resolver: Callable[[Any], object] | None = None
    sources: tuple[Source, ...] = DEFAULT_SOURCES
    may_act_for: Callable[[str, str], bool] | None = None
    signing_key: str | bytes | None = None
    body_timeout: float | None = 30.0
    prices: Any = None
    degrade: Degrade | None = None
    max_cost: int | None = None  # nano-USD
    session: Session | None = None
    budget_headers: bool = False
    project_from: RequestFact | None = None
    api_key_from: RequestFact | None = None

    def __post_init__(self) -> None:
        normalise(self, _NORMALISE)

    @property
    def fact_headers(self) -> tuple[str, ...]:
        """The headers ``project_from`` and ``api_key_from`` name (the shells look them up by name)."""
        return tuple(value for value in (self.project_from, self.api_key_from) if isinstance(value, str))

    @classmethod
    def of(cls, **options: Any) -> Config:
        """From a shell's keyword options; an unknown option is an :class:`InvalidOption` naming it
        (one that moved to the store says so)."""
        unknown = sorted(set(options) - set(cls.option_names()))
        if unknown:
            raise InvalidOption([moved(name) if name in STORE_OPTIONS else
                                 Problem(name, "", f"no such option (options: {', '.join(cls.option_names())})")
                                 for name in unknown])
        return cls(**options)

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


def problems(options: Mapping[str, object]) -> list[Problem]:
    """What :class:`Config` would refuse in ``options`` (by lower-case option name), without
    building anything: Django's system checks report these, the shells raise them."""
    return checked(options, _CHECKED)[1]


# -- one normaliser per option: the value as Config keeps it, or _Invalid saying why ----------------
def _memory_store() -> Store:
    from .stores.memory import MemoryStore  # loaded only by apps that use it
    return MemoryStore()


def _store(value: object) -> object:
    from .stores.base import Store
    if value is None:
        return _memory_store()
    if not isinstance(value, Store):
        raise _invalid(f"a Store (MemoryStore(), RedisStore.from_url(...)), not {value!r}")
    return value


def _flag(value: object) -> object:
    if not isinstance(value, bool):
        raise _invalid(f"True or False, not {value!r}")
    return value


def _max_body_size(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _invalid(f"a non-negative number of bytes, not {value!r}")
    return value


def _header_names(value: object) -> object:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable) \
            or not all(isinstance(name, str) and name for name in value):
        raise _invalid(f"a list or tuple of header names, not {value!r}")
    return tuple(value)


def _sources(value: object) -> object:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise _invalid(f"a list or tuple of {', '.join(SOURCES)}, not {value!r}")
    sources = tuple(value)
    if not sources or not set(sources) <= set(SOURCES) or len(set(sources)) != len(sources):
        raise _invalid(f"one or more of {', '.join(SOURCES)}, each once, in the order they are tried; not {value!r}")
    return sources


def _on_store_error(value: object) -> object:
    if not is_policy(value):
        raise _invalid(f'"open", "closed", an Allowance, or a callable (external_id, request) -> one of those; '
                       f"not {value!r}", 6)
    return value


def _callable(value: object) -> object:
    if value is not None and not callable(value):
        raise _invalid(f"a callable (or None), not {value!r}")
    return value


def _body_timeout(value: object) -> object:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or not value > 0):
        raise _invalid(f"a positive number of seconds (or None: no limit), not {value!r}")
    return value


def _default_budgets(value: object) -> object:
    from pydantic import ValidationError
    if value is None:
        return ()
    if isinstance(value, Mapping):
        items: list[tuple[str, object]] = [(f"[{period!r}]", {"period": period, "amount": amount})
                                           for period, amount in value.items()]
    elif isinstance(value, Iterable) and not isinstance(value, str | bytes):
        items = [(f"[{index}]", item) for index, item in enumerate(value)]
    else:
        raise _invalid('a {period: amount} dict (e.g. {"daily": "0.20"}), or a list of Budget objects or dicts', 3)
    budgets: list[Budget] = []
    found: list[tuple[str, str, int]] = []
    for where, item in items:
        if isinstance(item, Budget):
            budgets.append(item)
            continue
        try:
            budgets.append(Budget.model_validate(item))
        except ValidationError as error:
            for detail in error.errors():
                field_name = str(detail["loc"][0]) if detail["loc"] else ""
                given = item.get(field_name) if isinstance(item, Mapping) else item
                found.append((where, f"{field_name} {given!r}: {detail['msg']}", 4 if field_name == "amount" else 3))
    if found:
        raise _Invalid(*found)
    return tuple(budgets)


def _estimates(value: object) -> object:
    estimates: dict[str, int] = {}
    found: list[tuple[str, str, int]] = []
    for path, amount in _mapping(value, "path prefix to USD").items():
        try:
            estimates[path] = AUTO if amount == "auto" else to_nanos(amount)
        except (TypeError, ValueError) as error:
            found.append((f"[{path!r}]", f'{amount!r}: a USD amount or "auto" ({error})', 4))
    if found:
        raise _Invalid(*found)
    return estimates


def _rate_limit_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return f'a rate limit like "100/minute" or "10/second;1000/day", not {value!r}'
    from limits import parse_many  # only apps that rate limit load limits
    try:
        parse_many(value)
    except ValueError:
        return f'{value!r} is not a rate limit: e.g. "100/minute" or "10/second;1000/day"'
    return None


def _rate_limit(value: object) -> object:
    problem = None if value is None else _rate_limit_problem(value)
    if problem is not None:
        raise _invalid(problem, 5)
    return value


def _rate_limits(value: object) -> object:
    limits = dict(_mapping(value, "identity id to rate limit"))
    found = [(f"[{key!r}]", problem, 5) for key, limit in limits.items()
             if (problem := _rate_limit_problem(limit)) is not None]
    if found:
        raise _Invalid(*found)
    return limits


def _strategy(value: object) -> object:
    if value not in RATE_LIMIT_STRATEGIES:
        raise _invalid(f"one of {', '.join(RATE_LIMIT_STRATEGIES)}, not {value!r}", 5)
    return value


def _degrade(value: object) -> object:
    if isinstance(value, Degrade):
        return value
    degrade, found = degrade_of(value)
    if found:
        raise _Invalid(*((where, message, 9) for where, message in found))
    return degrade


def _max_cost(value: object) -> object:
    if value is None:
        return None
    try:
        return ceiling_nanos(value)  # type: ignore[arg-type]
    except ValueError as error:
        raise _invalid(str(error), 4) from None


def _session(value: object) -> object:
    if value is not None and not isinstance(value, Session):
        raise _invalid(f'a Session(max_cost, header="X-Session-Id" or field="session_id"), or None; not {value!r}')
    return value


def _request_fact(value: object) -> object:
    if value is None or callable(value):
        return value
    if isinstance(value, str) and value.strip() and ":" not in value and not any(c.isspace() for c in value):
        return value
    raise _invalid(f"a header name (e.g. \"X-Project-Id\") or a callable (scope | environ | request) -> str "
                   f"or None; not {value!r}")


_NORMALISE: dict[str, Callable[[object], object]] = {
    "store": _store,
    "require_identity": _flag,
    "header_names": _header_names,
    "max_body_size": _max_body_size,
    "default_budgets": _default_budgets,
    "rate_limit": _rate_limit,
    "rate_limits": _rate_limits,
    "rate_limit_strategy": _strategy,
    "on_store_error": _on_store_error,
    "create_missing": _flag,
    "estimates": _estimates,
    "resolver": _callable,
    "sources": _sources,
    "may_act_for": _callable,
    "signing_key": _secret,
    "body_timeout": _body_timeout,
    "degrade": _degrade,
    "max_cost": _max_cost,
    "session": _session,
    "budget_headers": _flag,
    "project_from": _request_fact,
    "api_key_from": _request_fact,
}
# What :func:`problems` checks: the middleware's options and, in Django's settings beside them, those
# of the store built from STORE_URL (PROVIDERS, NOTIFIERS, NOTIFIER_SECRET).
_CHECKED = {**_NORMALISE, **STORE_NORMALISERS}
