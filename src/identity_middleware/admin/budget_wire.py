"""orq's Budgets API on the wire: request JSON to budget specs and changes, budgets to ``BudgetRestResponse``.

Requests use the SDK's snake_case keys (camelCase ones are accepted too); responses use its camelCase
keys. Amounts are parsed as ``Decimal`` and sent as JSON numbers written from the exact value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec
from pydantic import ValidationError

from ..core.budgets import (
    BudgetChanges,
    BudgetOrder,
    BudgetPeriod,
    BudgetSpec,
    BudgetUsage,
    Dimension,
    ScopedBudget,
    ScopeKind,
)
from ..core.validation import InvalidIdentity, check_id
from .errors import invalid_request
from .wire import forecast_json

PERIOD_PREFIX = "BUDGET_PERIOD_"
KIND_PREFIX = "BUDGET_SCOPE_KIND_"
DIMENSION_PREFIX = "BUDGET_ALERT_DIMENSION_"
_SCOPE_FIELDS = {ScopeKind.IDENTITY: ("identity_external_id", "identityExternalId"),
                 ScopeKind.MODEL: ("model_id", "modelId"), ScopeKind.PROVIDER: ("provider", "provider"),
                 ScopeKind.PROJECT: ("project_id", "projectId"), ScopeKind.API_KEY: ("api_key_id", "apiKeyId")}
_RESPONSE_FIELD = {ScopeKind.IDENTITY: "identityExternalId", ScopeKind.MODEL: "modelId",
                   ScopeKind.PROVIDER: "provider", ScopeKind.PROJECT: "projectId", ScopeKind.API_KEY: "apiKeyId"}
_SCOPE_NAMES = {"apiKey": "api_key"}  # the response's camelCase name, accepted in a request too
_RESPONSE_SCOPE = {ScopeKind.API_KEY: "apiKey"}  # BudgetScopeRestResponse's alias
SCOPES = "identity, model, provider, project, api_key or workspace"
_encoder = msgspec.json.Encoder(decimal_format="number")


def encode(body: Mapping[str, Any]) -> bytes:
    """JSON with ``Decimal`` amounts written as numbers, digit for digit (no float on the way)."""
    return _encoder.encode(body)


def parse_body(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body, parse_float=Decimal) if body.strip() else {}
    except (ValueError, UnicodeDecodeError):
        raise invalid_request("The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise invalid_request("The request body must be a JSON object.")
    return data


def _get(data: Mapping[str, Any], snake: str, camel: str | None = None) -> Any:
    if snake in data:
        return data[snake]
    return data.get(camel) if camel else None


def _object(data: Mapping[str, Any], name: str, camel: str | None = None) -> dict[str, Any] | None:
    value = _get(data, name, camel)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_request(f"{name} must be an object.", name)
    return value


def period_of(value: object, field: str = "limits.period") -> BudgetPeriod:
    text = value if isinstance(value, str) else ""
    try:
        return BudgetPeriod(text.removeprefix(PERIOD_PREFIX).lower())
    except ValueError:
        names = ", ".join(PERIOD_PREFIX + period.name for period in BudgetPeriod)
        raise invalid_request(f"{field} must be one of {names}.", field) from None


# Every scope kind of orq's ``BudgetScopeKind``: a list filtered by one that no budget has is empty.
# (``match`` is ours: a match budget has no scope kind in orq's API, and no filter finds it by one.)
LISTED_KINDS = frozenset({kind.value for kind in ScopeKind if kind is not ScopeKind.MATCH})
SORT_FIELD_PREFIX = "BUDGET_SORT_FIELD_"
SORT_FIELDS = {SORT_FIELD_PREFIX + order.name: order for order in BudgetOrder if order is not BudgetOrder.ID}


def kind_of(value: str) -> str:
    kind = value.removeprefix(KIND_PREFIX).lower()
    if kind not in LISTED_KINDS:
        raise invalid_request(f"scope_kind {value!r} is not a budget scope kind.", "scope_kind")
    return kind


def order_of(value: str | None) -> BudgetOrder:
    """orq's ``sort_by`` (``BUDGET_SORT_FIELD_*``); not given: by id."""
    if value is None:
        return BudgetOrder.ID
    try:
        return SORT_FIELDS[value]
    except KeyError:
        raise invalid_request(f"sort_by must be one of {', '.join(SORT_FIELDS)}.", "sort_by") from None


def match_of(data: Mapping[str, Any]) -> str | None:
    """The CEL expression of a ``match`` object (``{"cel": "..."}``), or None when not given."""
    match = _object(data, "match")
    if match is None:
        return None
    _only(match, {"cel"}, "match")
    cel = match.get("cel")
    if not isinstance(cel, str) or not cel.strip():
        raise invalid_request("match.cel must be a non-empty CEL expression.", "match.cel")
    return cel


def _scope(data: Mapping[str, Any]) -> tuple[ScopeKind, str | None]:
    scope = _object(data, "scope")
    if _get(data, "match") is not None:
        if "scope" in data:
            raise invalid_request("give a scope or a match expression, not both.", "match")
        return ScopeKind.MATCH, None
    if not scope:
        raise invalid_request(f"scope or match is required: a scope sets one of {SCOPES}.", "scope")
    given = [_SCOPE_NAMES.get(name, name) for name, value in scope.items() if value is not None]
    if len(given) != 1 or given[0] not in {kind.value for kind in ScopeKind} or given[0] == ScopeKind.MATCH.value:
        raise invalid_request(f"scope must set exactly one of {SCOPES}.", "scope")
    kind = ScopeKind(given[0])
    _only({_SCOPE_NAMES.get(name, name): value for name, value in scope.items()}, {kind.value}, "scope")
    if kind is ScopeKind.WORKSPACE:
        _only(_object(scope, "workspace") or {}, set(), "scope.workspace")
        return kind, None
    inner = _object(scope, kind.value) or _object(scope, "apiKey") or {}
    _only(inner, set(_SCOPE_FIELDS[kind]), f"scope.{kind.value}")
    target = _get(inner, *_SCOPE_FIELDS[kind])
    field = f"scope.{kind.value}.{_SCOPE_FIELDS[kind][0]}"
    try:
        return kind, check_id(target, field)  # an identity's rule for every target: 1..255, no control characters
    except InvalidIdentity as error:
        raise invalid_request(f"{error.message}.", field) from None


def _alerts(value: object, *, creating: bool) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise invalid_request("alerts must be an array.", "alerts")
    alerts = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise invalid_request("each alert is an object.", f"alerts[{index}]")
        _only(item, {"id", "threshold_percent", "thresholdPercent", "notifier_ids", "notifierIds", "dimension"},
              f"alerts[{index}]")
        if creating and item.get("id") is not None:
            raise invalid_request("alert ids are assigned by the server; omit alerts[].id.", f"alerts[{index}].id")
        notifier_ids = _get(item, "notifier_ids", "notifierIds")
        if notifier_ids is None:
            notifier_ids = []
        if not isinstance(notifier_ids, list) or not all(isinstance(each, str) for each in notifier_ids):
            raise invalid_request("notifier_ids must be an array of strings.", f"alerts[{index}].notifier_ids")
        threshold = _get(item, "threshold_percent", "thresholdPercent")
        alert: dict[str, Any] = {"threshold_percent": _integer(threshold, f"alerts[{index}].threshold_percent"),
                                 "notifier_ids": notifier_ids}
        if item.get("id") is not None:
            alert["id"] = item["id"]
        dimension = item.get("dimension")
        if dimension is not None:
            name = str(dimension).removeprefix(DIMENSION_PREFIX).lower()
            if name not in {d.value for d in Dimension}:
                raise invalid_request("dimension must be BUDGET_ALERT_DIMENSION_COST or _TOKENS.",
                                      f"alerts[{index}].dimension")
            alert["dimension"] = name
        alerts.append(alert)
    return alerts


def _forecast_alert(data: Mapping[str, Any], fields: dict[str, Any]) -> None:
    """Our extension ``forecast_alert: {"notifier_ids": [...]}`` (see core.forecast)."""
    alert = _object(data, "forecast_alert", "forecastAlert")
    if alert is None:
        return
    _only(alert, {"notifier_ids", "notifierIds"}, "forecast_alert")
    notifier_ids = _get(alert, "notifier_ids", "notifierIds")
    if notifier_ids is None:
        notifier_ids = []
    if not isinstance(notifier_ids, list) or not all(isinstance(each, str) for each in notifier_ids):
        raise invalid_request("notifier_ids must be an array of strings.", "forecast_alert.notifier_ids")
    fields["forecast_alert"] = {"notifier_ids": notifier_ids}


def _limits(data: Mapping[str, Any], fields: dict[str, Any]) -> None:
    limits = _object(data, "limits")
    if limits is not None:
        _only(limits, {"period", "amount", "token_limit", "tokenLimit"}, "limits")
        if limits.get("period") is not None:
            fields["period"] = period_of(limits["period"])
        for name, camel in (("amount", None), ("token_limit", "tokenLimit")):
            value = _get(limits, name, camel)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
                    raise invalid_request(f"limits.{name} must be a number.", f"limits.{name}")
                if name == "token_limit":
                    if value != int(value):
                        raise invalid_request("limits.token_limit must be a whole number.", "limits.token_limit")
                    value = int(value)
                fields[name] = value
    rate = _object(data, "rate_limit", "rateLimit")
    if rate is not None:
        _only(rate, {"requests_per_minute", "requestsPerMinute"}, "rate_limit")
        if _get(rate, "requests_per_minute", "requestsPerMinute") is None:
            raise invalid_request("rate_limit needs requests_per_minute.", "rate_limit.requests_per_minute")
    if rate is not None and _get(rate, "requests_per_minute", "requestsPerMinute") is not None:
        fields["requests_per_minute"] = _integer(_get(rate, "requests_per_minute", "requestsPerMinute"),
                                                 "rate_limit.requests_per_minute")


_CREATE_KEYS = {"scope", "match", "limits", "rate_limit", "rateLimit", "is_active", "isActive", "expires_at",
                "expiresAt", "alerts", "forecast_alert", "forecastAlert"}
_UPDATE_KEYS = (_CREATE_KEYS - {"scope"}) | {"clear_expires_at", "clearExpiresAt", "clear_alerts", "clearAlerts",
                                             "clear_forecast_alert", "clearForecastAlert"}


def _only(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    """Refuse a field we do not know: a typo must not pass as a budget without its limit."""
    unknown = sorted(set(data) - allowed)
    if unknown:
        field = f"{where}.{unknown[0]}" if where else unknown[0]
        raise invalid_request(f"unknown field {field!r}.", field)


def _validation(error: ValidationError) -> Exception:
    first = error.errors()[0]
    names = {"amount": "limits.amount", "token_limit": "limits.token_limit",
             "requests_per_minute": "rate_limit.requests_per_minute", "match": "match.cel"}
    loc = [str(part) for part in first["loc"]]
    field = names.get(loc[0], ".".join(loc)) if loc else "body"
    return invalid_request(f"{field}: {first['msg'].removeprefix('Value error, ')}", field)


def _flags(data: Mapping[str, Any], fields: dict[str, Any], names: tuple[tuple[str, str], ...]) -> None:
    """Booleans as JSON booleans and ``expires_at`` as an ISO 8601 string: no lax coercion of 0 or "yes"."""
    for name, camel in names:
        value = _get(data, name, camel)
        if value is None:
            continue
        if name == "expires_at" and not isinstance(value, str):
            raise invalid_request("expires_at must be an ISO 8601 date-time string.", name)
        if name != "expires_at" and not isinstance(value, bool):
            raise invalid_request(f"{name} must be true or false.", name)
        fields[name] = value


def _integer(value: object, field: str) -> int:
    """A JSON integer (``7`` or ``7.0``: JSON Schema counts both as integers)."""
    if (isinstance(value, float) and value.is_integer()) or (
            isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value()):
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_request(f"{field} must be a whole number.", field)
    return value


def spec_from(data: Mapping[str, Any]) -> BudgetSpec:
    _only(data, _CREATE_KEYS, "")
    kind, target = _scope(data)
    fields: dict[str, Any] = {"scope": kind, "target": target, "match": match_of(data)}
    _limits(data, fields)
    _flags(data, fields, (("is_active", "isActive"), ("expires_at", "expiresAt")))
    if _get(data, "alerts") is not None:
        fields["alerts"] = _alerts(data["alerts"], creating=True)
    _forecast_alert(data, fields)
    try:
        spec = BudgetSpec.model_validate(fields)
    except ValidationError as error:
        raise _validation(error) from None
    return spec  # an expires_at already past is kept: the budget is simply not enforced


def changes_from(data: Mapping[str, Any]) -> BudgetChanges:
    _only(data, _UPDATE_KEYS, "")
    fields: dict[str, Any] = {}
    if _get(data, "match") is not None:
        fields["match"] = match_of(data)
    _limits(data, fields)
    _flags(data, fields, (("is_active", "isActive"), ("expires_at", "expiresAt"),
                          ("clear_expires_at", "clearExpiresAt"), ("clear_alerts", "clearAlerts"),
                          ("clear_forecast_alert", "clearForecastAlert")))
    if _get(data, "alerts") is not None:
        fields["alerts"] = _alerts(data["alerts"], creating=False)
    _forecast_alert(data, fields)
    try:
        return BudgetChanges.model_validate(fields)
    except ValidationError as error:
        raise _validation(error) from None


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _cel(budget: ScopedBudget) -> str:
    if budget.scope is ScopeKind.MATCH:
        return budget.match or ""
    if budget.scope is ScopeKind.WORKSPACE:
        return ""
    name = {ScopeKind.IDENTITY: "identity.external_id", ScopeKind.MODEL: "model",
            ScopeKind.PROVIDER: "provider", ScopeKind.PROJECT: "project", ScopeKind.API_KEY: "api_key"}[budget.scope]
    return f"{name} == {json.dumps(budget.target)}"


def budget_json(budget: ScopedBudget, usage: BudgetUsage | None = None) -> dict[str, Any]:
    """The SDK's ``BudgetRestResponse``."""
    limits: dict[str, Any] = {"period": PERIOD_PREFIX + budget.period.name}
    if budget.amount is not None:
        limits["amount"] = budget.amount
    if budget.token_limit is not None:
        limits["tokenLimit"] = budget.token_limit
    body: dict[str, Any] = {"budgetId": budget.id, "limits": limits, "createdAt": _iso(budget.created_at),
                            "updatedAt": _iso(budget.updated_at), "match": {"cel": _cel(budget)},
                            "isActive": budget.is_active}
    if budget.scope is not ScopeKind.MATCH:  # a match budget has its expression and no scope
        body["scope"] = {_RESPONSE_SCOPE.get(budget.scope, budget.scope.value): {}
                         if budget.scope is ScopeKind.WORKSPACE else {_RESPONSE_FIELD[budget.scope]: budget.target}}
    if budget.requests_per_minute is not None:
        body["rateLimit"] = {"requestsPerMinute": budget.requests_per_minute}
    if budget.expires_at is not None:
        body["expiresAt"] = _iso(budget.expires_at)
    if usage is not None:
        body["usage"] = {"amount": usage.amount, "tokens": usage.tokens, "requests": usage.requests}
        if usage.forecast is not None:  # our extension: the SDK ignores fields it does not know
            body["forecast"] = forecast_json(usage.forecast)
    if budget.forecast_alert is not None:  # our extension, as "forecast" is
        body["forecastAlert"] = {"notifierIds": list(budget.forecast_alert.notifier_ids)}
    if budget.alerts:
        body["alerts"] = [{"id": alert.id, "thresholdPercent": alert.threshold_percent,
                           "notifierIds": list(alert.notifier_ids),
                           "dimension": DIMENSION_PREFIX + alert.dimension.name} for alert in budget.alerts]
    return body
