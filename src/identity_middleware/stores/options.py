"""Every store's options for its budgets: the provider map and where alerts go, given where the store is built.

They belong to the store, not to a middleware over it: the store matches models to provider
budgets in every admission and check, and fires alerts from every settlement, whoever wrote it (a
middleware, the admin API, another process). A middleware never changes the store it is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

from ..core.options import Invalid, Normalisers, Problem, invalid, mapping, normalise, secret

if TYPE_CHECKING:
    from .notifiers import Notifier

__all__ = ["NORMALISERS", "STORE_OPTIONS", "StoreOptions", "moved"]


def _providers(value: object) -> object:
    providers = dict(mapping(value, "model name to provider"))
    if not all(isinstance(key, str) and isinstance(name, str) for key, name in providers.items()):
        raise invalid('a dict of model name to provider, e.g. {"gpt-4o": "openai"}')
    return providers


def _notifiers(value: object) -> object:
    notifiers = dict(mapping(value, "notifier id to URL or callable"))
    found = [(f"[{name!r}]", "an http(s) URL or a callable", 9) for name, target in notifiers.items()
             if not callable(target) and not (isinstance(target, str) and target.startswith(("http://", "https://")))]
    if found:
        raise Invalid(*found)
    return notifiers


#: One normaliser per store option (Django's system checks run them on the settings' keys too).
NORMALISERS: Normalisers = {"providers": _providers, "notifiers": _notifiers, "notifier_secret": secret}


@dataclass(frozen=True)
class StoreOptions:
    """The options every store takes for its budgets, validated when it is built (an
    :class:`~identity_middleware.config.InvalidOption` naming each problem): ``providers``, the
    provider of model names without a ``provider/`` prefix (``{"gpt-4o": "openai"}``), which model
    and provider budgets and match expressions see; ``notifiers``, where the budgets' threshold and
    forecast alerts go (notifier id -> an http(s) URL, sent a signed JSON POST, or a callable given
    the event); ``notifier_secret``, the HMAC key that signs those POSTs."""

    providers: Mapping[str, str] = field(default_factory=dict)
    notifiers: Mapping[str, Notifier] = field(default_factory=dict)
    notifier_secret: str | bytes | None = None

    def __post_init__(self) -> None:
        normalise(self, NORMALISERS)


#: The store's options, not the middleware's: given to a middleware, each is refused (:func:`moved`).
STORE_OPTIONS = tuple(option.name for option in fields(StoreOptions))


def moved(option: str) -> Problem:
    """A store's option given to the middleware (or beside a Django ``STORE``): where it goes."""
    return Problem(option, "", f"{option}= is an option of the store, not of the middleware: "
                               f"MemoryStore({option}=...) or RedisStore.from_url(url, {option}=...)")
