"""``settings.IDENTITY_MIDDLEWARE`` read into one shared :class:`Flow`, rebuilt when the setting changes."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from ..config import Config, InvalidOption, Problem
from ..flow import Flow
from ..stores import Store, store_from_url
from ..stores.options import STORE_OPTIONS, moved

__all__ = [
    "KEYS", "OTHER_KEYS", "SETTING", "STORE_KEYS", "close_stores", "current_flow", "get_store",
    "misplaced", "raw_settings", "store_for_url", "store_options",
]

SETTING = "IDENTITY_MIDDLEWARE"
# The options of the store built from STORE_URL (PROVIDERS, NOTIFIERS, NOTIFIER_SECRET).
STORE_KEYS = tuple(name.upper() for name in STORE_OPTIONS)
# The setting's keys: every Config option upper-cased, STORE_URL and the options of its store.
KEYS = (*(name.upper() for name in Config.option_names()), "STORE_URL", *STORE_KEYS)

# Keys read by other parts of the package (the admin API's URLconf), not by the flow.
OTHER_KEYS = ("ADMIN_TOKEN",)

_lock = threading.Lock()
_stores: list[tuple[str, dict[str, Any], Store]] = []  # (URL, store options, the store built)
_flow: Flow | None = None


def raw_settings() -> Mapping[str, Any]:
    """The setting as the project wrote it (``{}`` when absent)."""
    value = getattr(settings, SETTING, None)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ImproperlyConfigured(f"settings.{SETTING} must be a dict")
    return value


def store_options(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The options of the store built from ``STORE_URL``: ``PROVIDERS`` as ``providers``, ..."""
    return {key.lower(): raw[key] for key in STORE_KEYS if key in raw}


def misplaced(raw: Mapping[str, Any]) -> list[Problem]:
    """The store's keys beside a ``STORE`` the project built: that store takes its own options
    (``MemoryStore(providers=...)``), and the middleware never changes a store it is given."""
    if raw.get("STORE") is None:
        return []
    return [moved(key.lower()) for key in STORE_KEYS if key in raw]


def store_for_url(url: str, **options: Any) -> Store:
    """One store per URL (and store options) for the whole process, so every request (and thread)
    shares its pool; ``options`` as :func:`~identity_middleware.stores.store_from_url` takes them."""
    with _lock:
        for known, given, store in _stores:
            if known == url and given == options:
                return store
        store = store_from_url(url, **options)
        _stores.append((url, options, store))
        return store


def _store(raw: Mapping[str, Any]) -> Store:
    given = raw.get("STORE")
    if isinstance(given, str):
        given = import_string(given)
    if callable(given) and not isinstance(given, Store):
        given = given()  # a factory: "myproject.stores.make_store"
    if isinstance(given, Store):
        return given
    if given is not None:
        raise ImproperlyConfigured(f"{SETTING}['STORE'] must be a Store, a factory or a dotted path to one")
    return store_for_url(str(raw.get("STORE_URL", "memory://")), **store_options(raw))


def current_flow() -> Flow:
    """The flow for the current settings; built on first use and after each settings change."""
    global _flow
    flow = _flow
    if flow is not None:
        return flow
    raw = raw_settings()
    try:
        if found := misplaced(raw):
            raise InvalidOption(found)
        built = Flow(Config.from_settings(raw, store=_store(raw), resolver=_resolver(raw)))
    except (TypeError, ValueError, ImportError) as error:
        raise ImproperlyConfigured(f"settings.{SETTING}: {error}") from error
    with _lock:
        if _flow is None:
            _flow = built
        return _flow


def _resolver(raw: Mapping[str, Any]) -> Any:
    resolver = raw.get("RESOLVER")
    return import_string(resolver) if isinstance(resolver, str) else resolver


def get_store() -> Store:
    """The store the middleware uses under the current settings (for views, commands, shells)."""
    return current_flow().config.store


def close_stores() -> None:
    """Close and forget every store opened from settings (at shutdown, or between tests)."""
    global _flow
    with _lock:
        stores = [store for _, _, store in _stores]
        _stores.clear()
        _flow = None
    for store in stores:
        store.close()


def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    global _flow
    if setting == SETTING:
        with _lock:
            _flow = None


setting_changed.connect(_setting_changed, dispatch_uid="identity_middleware.django.conf")
