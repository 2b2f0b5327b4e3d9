"""System checks (``manage.py check``) that catch a misconfigured ``IDENTITY_MIDDLEWARE`` at startup."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register
from django.utils.module_loading import import_string
from limits import parse_many

from ..core.errors import StoreMisconfigured, StoreUnavailable
from ..core.outage import is_policy
from ..core.periods import Period
from ..stores.urls import check_url
from .conf import KEYS, OTHER_KEYS, SETTING, store_for_url

__all__ = ["check_middleware_order", "check_settings"]

TAG = "identity_middleware"
MIDDLEWARE = "identity_middleware.django.IdentityMiddleware"
AUTH_MIDDLEWARE = "django.contrib.auth.middleware.AuthenticationMiddleware"


def _error(message: str, number: int, hint: str | None = None) -> Error:
    return Error(message, hint=hint, obj=f"settings.{SETTING}", id=f"identity_middleware.E{number:03d}")


def _amount_problem(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        return "is not a decimal string or number"
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return "is not a decimal string or number"
    return None if amount.is_finite() and amount > 0 else "must be greater than 0"


def _budget_errors(budgets: object) -> Iterable[Error]:
    if not isinstance(budgets, Mapping):
        yield _error("DEFAULT_BUDGETS must be a dict of period to amount", 3, 'e.g. {"daily": "0.20"}')
        return
    periods = [period.value for period in Period]
    for period, amount in budgets.items():
        if period not in periods:
            yield _error(f"DEFAULT_BUDGETS has an unknown period {period!r}", 3, f"one of {', '.join(periods)}")
        problem = _amount_problem(amount)
        if problem is not None:
            yield _error(f"DEFAULT_BUDGETS[{period!r}] = {amount!r} {problem}", 4)


def _rate_limit_errors(raw: Mapping[str, Any]) -> Iterable[Error]:
    limits = {"RATE_LIMIT": raw.get("RATE_LIMIT")}
    overrides = raw.get("RATE_LIMITS") or {}
    if not isinstance(overrides, Mapping):
        yield _error("RATE_LIMITS must be a dict of identity id to rate limit", 5)
        overrides = {}
    limits.update({f"RATE_LIMITS[{key!r}]": value for key, value in overrides.items()})
    for name, value in limits.items():
        if value is None:
            continue
        try:
            parse_many(str(value))
        except ValueError:
            yield _error(f"{name} = {value!r} is not a rate limit", 5, 'e.g. "100/minute" or "10/second;1000/day"')


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
        store_for_url(str(url)).check()
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
    if not is_policy(raw.get("ON_STORE_ERROR", "open")):
        yield _error('ON_STORE_ERROR must be "open", "closed", an Allowance, or a callable '
                     "(external_id, request) -> one of those", 6)
    for key in ("RESOLVER", "STORE"):
        value = raw.get(key)
        if isinstance(value, str):
            try:
                import_string(value)
            except ImportError as error:
                yield _error(f"{key} {value!r} cannot be imported: {error}", 7)
    estimates = raw.get("ESTIMATES") or {}
    for path, amount in (estimates.items() if isinstance(estimates, Mapping) else []):
        problem = _amount_problem(amount)
        if problem is not None:
            yield _error(f"ESTIMATES[{path!r}] = {amount!r} {problem}", 4)


@register(TAG)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    raw = getattr(settings, SETTING, None)
    if raw is None:
        return []
    if not isinstance(raw, Mapping):
        return [_error(f"settings.{SETTING} must be a dict", 1)]
    return [*_store_errors(raw), *_budget_errors(raw.get("DEFAULT_BUDGETS") or {}),
            *_rate_limit_errors(raw), *_other_errors(raw)]


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
