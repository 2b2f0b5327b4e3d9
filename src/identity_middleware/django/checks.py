"""System checks (``manage.py check``) that catch a misconfigured ``IDENTITY_MIDDLEWARE`` at startup."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register
from django.utils.module_loading import import_string

from ..config import InvalidOption, problems
from ..core.errors import StoreMisconfigured, StoreUnavailable
from ..stores.urls import check_url
from .conf import KEYS, OTHER_KEYS, SETTING, STORE_KEYS, misplaced, store_for_url, store_options

__all__ = ["check_middleware_order", "check_settings"]

TAG = "identity_middleware"
MIDDLEWARE = "identity_middleware.django.IdentityMiddleware"
AUTH_MIDDLEWARE = "django.contrib.auth.middleware.AuthenticationMiddleware"


def _error(message: str, number: int, hint: str | None = None) -> Error:
    return Error(message, hint=hint, obj=f"settings.{SETTING}", id=f"identity_middleware.E{number:03d}")


def _option_errors(raw: Mapping[str, Any]) -> Iterable[Error]:
    """The options' validation, the one :class:`~identity_middleware.config.Config` runs, each
    problem reported under its check number. ``STORE`` and ``RESOLVER`` may be dotted paths or
    factories here: :func:`_other_errors` imports them, and building a store is no check's job.
    Beside a ``STORE``, the store's keys are refused as the runtime refuses them (:func:`misplaced`)."""
    given_store = raw.get("STORE") is not None
    options = {key.lower(): value for key, value in raw.items()
               if key not in ("STORE", "RESOLVER") and not (given_store and key in STORE_KEYS)}
    resolver = raw.get("RESOLVER")
    if resolver is not None and not isinstance(resolver, str):
        options["resolver"] = resolver
    for problem in [*problems(options), *misplaced(raw)]:
        yield _error(f"{problem.option.upper()}{problem.where}: {problem.message}", problem.check)


def _store_errors(raw: Mapping[str, Any]) -> Iterable[CheckMessage]:
    if "STORE" in raw:
        return
    url = raw.get("STORE_URL", "memory://")
    try:
        check_url(url)
    except StoreMisconfigured as error:
        yield _error(str(error), 2, "use memory://, redis://, rediss://, unix://, redis+sentinel:// or redis+cluster://")
        return
    if str(url).startswith("memory:"):
        return
    try:  # the store the middleware will use, asked once (a PING): is it there, does it accept us?
        store_for_url(str(url), **store_options(raw)).check_ready()
    except InvalidOption:
        return  # its options' problems are reported by _option_errors
    except StoreMisconfigured as error:
        yield _error(str(error), 9)
    except StoreUnavailable as error:
        yield Warning(f"{error}: requests follow ON_STORE_ERROR until it answers", obj=f"settings.{SETTING}",
                      id="identity_middleware.W002")


def _other_errors(raw: Mapping[str, Any]) -> Iterable[CheckMessage]:
    for key in raw:
        if key not in KEYS and key not in OTHER_KEYS:
            yield Warning(f"unknown key {key!r} in settings.{SETTING}", obj=f"settings.{SETTING}",
                          hint=f"known keys: {', '.join(sorted([*KEYS, *OTHER_KEYS]))}",
                          id="identity_middleware.W001")
    for key in ("RESOLVER", "STORE"):
        value = raw.get(key)
        if isinstance(value, str):
            try:
                import_string(value)
            except ImportError as error:
                yield _error(f"{key} {value!r} cannot be imported: {error}", 7)


@register(TAG)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    raw = getattr(settings, SETTING, None)
    if raw is None:
        return []
    if not isinstance(raw, Mapping):
        return [_error(f"settings.{SETTING} must be a dict", 1)]
    return [*_store_errors(raw), *_option_errors(raw), *_other_errors(raw)]


@register(TAG)
def check_middleware_order(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``request.user`` exists only after ``AuthenticationMiddleware`` has run."""
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    if MIDDLEWARE in middleware and AUTH_MIDDLEWARE in middleware and (
            middleware.index(MIDDLEWARE) < middleware.index(AUTH_MIDDLEWARE)):
        return [Error(f"{MIDDLEWARE} is listed before {AUTH_MIDDLEWARE}", obj="settings.MIDDLEWARE",
                      hint="move it after AuthenticationMiddleware so request.user names the identity",
                      id="identity_middleware.E008")]
    return []
