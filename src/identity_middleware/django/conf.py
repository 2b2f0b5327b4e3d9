"""``settings.IDENTITY_MIDDLEWARE`` read into one shared :class:`Flow`, rebuilt when the setting changes."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from ..config import Config
from ..flow import Flow
from ..stores import Store, store_from_url

__all__ = [
    "KEYS", "OTHER_KEYS", "SETTING", "close_stores", "current_flow", "get_store",
    "raw_settings", "store_for_url",
]

SETTING = "IDENTITY_MIDDLEWARE"
# The setting's keys: every Config option upper-cased, and STORE_URL (a store built from a URL).
KEYS = (*(name.upper() for name in Config.option_names()), "STORE_URL")

# Keys read by other parts of the package (the admin API's URLconf), not by the flow.
OTHER_KEYS = ("ADMIN_TOKEN",)

_lock = threading.Lock()
_stores: dict[str, Store] = {}
_flow: Flow | None = None


def raw_settings() -> Mapping[str, Any]:
    """The setting as the project wrote it (``{}`` when absent)."""
    value = getattr(settings, SETTING, None)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ImproperlyConfigured(f"settings.{SETTING} must be a dict")
    return value


def store_for_url(url: str) -> Store:
    """One store per URL for the whole process, so every request (and thread) shares its pool."""
    with _lock:
        store = _stores.get(url)
        if store is None:
            store = _stores[url] = store_from_url(url)
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
    return store_for_url(str(raw.get("STORE_URL", "memory://")))


def current_flow() -> Flow:
    """The flow for the current settings; built on first use and after each settings change."""
    global _flow
    flow = _flow
    if flow is not None:
        return flow
    raw = raw_settings()
    try:
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
        stores = list(_stores.values())
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
