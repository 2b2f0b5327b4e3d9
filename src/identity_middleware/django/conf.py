"""``settings.IDENTITY_MIDDLEWARE`` read into one shared :class:`Gate`, rebuilt when the setting changes."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from ..gate import Gate, GateConfig
from ..stores import Store, store_from_url

__all__ = [
    "KEYS", "OTHER_KEYS", "SETTING", "STORE_SCHEMES", "close_stores", "current_gate", "gate_options",
    "get_store", "raw_settings", "store_for_url",
]

SETTING = "IDENTITY_MIDDLEWARE"
STORE_SCHEMES = ("memory", "redis", "rediss", "unix", "redis+sentinel", "redis+cluster")

# settings key -> GateConfig.build keyword
KEYS = {
    "STORE": "store",
    "STORE_URL": "store",
    "REQUIRE_IDENTITY": "require_identity",
    "HEADER_NAMES": "header_names",
    "MAX_BODY_SIZE": "max_body_size",
    "DEFAULT_BUDGETS": "default_budgets",
    "RATE_LIMIT": "rate_limit",
    "RATE_LIMITS": "rate_limits",
    "RATE_LIMIT_STRATEGY": "rate_limit_strategy",
    "ON_STORE_ERROR": "on_store_error",
    "CREATE_MISSING": "create_missing",
    "ESTIMATES": "estimates",
    "RESOLVER": "resolver",
}

# Keys read by other parts of the package (the admin API's URLconf), not by the gate.
OTHER_KEYS = ("ADMIN_TOKEN",)

_lock = threading.Lock()
_stores: dict[str, Store] = {}
_gate: Gate | None = None


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


def gate_options(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``GateConfig.build`` keywords from the setting (unknown keys are left to the system checks)."""
    options: dict[str, Any] = {KEYS[key]: value for key, value in raw.items() if key in KEYS}
    options["store"] = _store(raw)
    resolver = options.get("resolver")
    if isinstance(resolver, str):
        options["resolver"] = import_string(resolver)
    return options


def current_gate() -> Gate:
    """The gate for the current settings; built on first use and after each settings change."""
    global _gate
    gate = _gate
    if gate is not None:
        return gate
    raw = raw_settings()
    try:
        built = Gate(GateConfig.build(**gate_options(raw)))
    except (TypeError, ValueError, ImportError) as error:
        raise ImproperlyConfigured(f"settings.{SETTING}: {error}") from error
    with _lock:
        if _gate is None:
            _gate = built
        return _gate


def get_store() -> Store:
    """The store the middleware uses under the current settings (for views, commands, shells)."""
    return current_gate().store


def close_stores() -> None:
    """Close and forget every store opened from settings (at shutdown, or between tests)."""
    global _gate
    with _lock:
        stores = list(_stores.values())
        _stores.clear()
        _gate = None
    for store in stores:
        store.close()


def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    global _gate
    if setting == SETTING:
        with _lock:
            _gate = None


setting_changed.connect(_setting_changed, dispatch_uid="identity_middleware.django.conf")
