"""The OpenAPI part of the Budgets routes (``/v2/budgets``): the SDK's request and response shapes."""

from __future__ import annotations

from typing import Any

from ..core.budgets import MAX_MATCH_LENGTH, MAX_TOKEN_LIMIT, BudgetPeriod
from ..core.money import AMOUNT_PATTERN
from ..stores.base import MAX_PAGE_SIZE
from .budget_wire import KIND_PREFIX, LISTED_KINDS, SORT_FIELDS

__all__ = ["budget_paths", "budget_schemas"]

_REF = "#/components/schemas/{model}"
_PERIODS = [f"BUDGET_PERIOD_{period.name}" for period in BudgetPeriod]
_KINDS = sorted(KIND_PREFIX + kind.upper() for kind in LISTED_KINDS)  # a kind no budget has lists nothing
_DIMENSIONS = ["BUDGET_ALERT_DIMENSION_COST", "BUDGET_ALERT_DIMENSION_TOKENS"]  # TOKENS: an earlier version's
_DIMENSIONS_IN = ["BUDGET_ALERT_DIMENSION_COST"]  # orq's rule: a TOKENS alert is rejected (400)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _json(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


def _obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def _closed(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    """An input object that allows no other property."""
    return _obj(properties, required) | {"additionalProperties": False}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional input the SDK may send as null (taken as not given)."""
    return {"anyOf": [schema, {"type": "null"}]}


def budget_schemas() -> dict[str, Any]:
    # Money in: whole nano-dollars, more than 0, at most $1e9 (the server refuses anything else).
    number = {"type": "number", "minimum": 0.000000001, "maximum": 1_000_000_000, "multipleOf": 0.000000001}
    alert_fields = {"threshold_percent": {"type": "integer", "minimum": 1, "maximum": 100},
                    "notifier_ids": _nullable({"type": "array", "items": {"type": "string"}}),
                    "dimension": _nullable({"type": "string", "enum": _DIMENSIONS_IN})}
    alert_in = _closed(alert_fields, ["threshold_percent"])  # ids are the server's on create
    alert_update = _closed({**alert_fields, "id": {"type": "string"}}, ["threshold_percent"])
    limits_in = _closed({"period": _nullable({"type": "string", "enum": _PERIODS}), "amount": _nullable(number),
                         "token_limit": _nullable({"type": "integer", "minimum": 1, "maximum": MAX_TOKEN_LIMIT})})
    rate_in = _closed({"requests_per_minute": {"type": "integer", "minimum": 1}},
                      ["requests_per_minute"])
    target = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]+$"}
    # Exactly one scope kind, or (instead of a scope) a CEL match expression.
    scope_in = {"oneOf": [
        _closed({"workspace": _closed({}, [])}, ["workspace"]),
        _closed({"identity": _closed({"identity_external_id": target}, ["identity_external_id"])}, ["identity"]),
        _closed({"model": _closed({"model_id": target}, ["model_id"])}, ["model"]),
        _closed({"provider": _closed({"provider": target}, ["provider"])}, ["provider"]),
        _closed({"project": _closed({"project_id": target}, ["project_id"])}, ["project"]),
        _closed({"api_key": _closed({"api_key_id": target}, ["api_key_id"])}, ["api_key"]),
    ]}
    match_in = _closed({"cel": {"type": "string", "minLength": 1, "maxLength": MAX_MATCH_LENGTH}}, ["cel"])
    forecast_alert_in = _closed({"notifier_ids": _nullable({"type": "array", "items": {"type": "string"}})})
    common_in = {"limits": _nullable(limits_in), "rate_limit": _nullable(rate_in),
                 "is_active": _nullable({"type": "boolean"}),
                 "expires_at": _nullable({"type": "string", "format": "date-time"}),
                 "alerts": _nullable({"type": "array", "items": alert_in, "maxItems": 20}),
                 # Our extension: notify once per period when the budget is forecast to run out.
                 "forecast_alert": _nullable(forecast_alert_in)}
    # A budget limits something: an amount, tokens or requests per minute (else 400).
    some_limit = {"anyOf": [
        {"required": ["limits"], "properties": {"limits": {"type": "object", "anyOf": [
            {"required": ["amount"], "properties": {"amount": {"type": "number"}}},
            {"required": ["token_limit"], "properties": {"token_limit": {"type": "integer"}}}]}}},
        {"required": ["rate_limit"], "properties": {"rate_limit": {"type": "object",
                                                                     "required": ["requests_per_minute"]}}}]}
    dimension = {"anyOf": [{"type": "null"}, _obj({"limit": {"type": "number"}, "consumed": {"type": "number"},
                                                     "remaining": {"type": "number"}},
                                                    ["limit", "consumed", "remaining"])]}
    budget = _obj({
        "budgetId": {"type": "string"},
        "limits": _obj({"period": {"type": "string", "enum": _PERIODS}, "amount": {"type": "number"},
                        "tokenLimit": {"type": "number"}}),
        "createdAt": {"type": "string", "format": "date-time"},
        "updatedAt": {"type": "string", "format": "date-time"},
        "scope": _obj({"workspace": {"type": "object"},
                       "identity": _obj({"identityExternalId": {"type": "string"}}),
                       "model": _obj({"modelId": {"type": "string"}}),
                       "provider": _obj({"provider": {"type": "string"}}),
                       "project": _obj({"projectId": {"type": "string"}}),
                       "apiKey": _obj({"apiKeyId": {"type": "string"}})}),
        "match": _obj({"cel": {"type": "string"}}),
        "rateLimit": _obj({"requestsPerMinute": {"type": "integer"}}),
        "isActive": {"type": "boolean"},
        "expiresAt": {"type": "string", "format": "date-time"},
        "usage": _obj({"amount": {"type": "number"}, "tokens": {"type": "number"}, "requests": {"type": "integer"}}),
        "forecast": _ref("BudgetForecast"),
        "forecastAlert": _obj({"notifierIds": {"type": "array", "items": {"type": "string"}}}),
        "alerts": {"type": "array", "items": _obj({
            "id": {"type": "string"}, "thresholdPercent": {"type": "integer"},
            "notifierIds": {"type": "array", "items": {"type": "string"}},
            "dimension": {"type": "string", "enum": _DIMENSIONS}}, ["thresholdPercent", "notifierIds"])},
    }, ["budgetId", "limits", "createdAt", "updatedAt"])
    return {
        "ScopedBudget": budget,
        "BudgetEnvelope": _obj({"budget": _ref("ScopedBudget")}, ["budget"]),
        "ScopedBudgetList": _obj({"object": {"const": "list"}, "data": {"type": "array", "items": _ref("ScopedBudget")},
                                  "hasMore": {"type": "boolean"}, "has_more": {"type": "boolean"}},
                                 ["object", "data", "hasMore"]),
        # A scope or a match expression, not both (the second only: 400).
        "CreateScopedBudget": _closed({"scope": scope_in, "match": match_in, **common_in}, []) | some_limit
        | {"oneOf": [{"required": ["scope"], "not": {"required": ["match"]}},
                     {"required": ["match"], "not": {"required": ["scope"]}}]},
        "UpdateScopedBudget": _closed({**common_in, "match": _nullable(match_in),
                                       "alerts": _nullable({"type": "array", "items": alert_update, "maxItems": 20}),
                                       "clear_expires_at": {"type": "boolean"},
                                       "clear_alerts": {"type": "boolean"},
                                       "clear_forecast_alert": {"type": "boolean"}}, []),
        "Empty": {"type": "object"},
        "BudgetCheck": _closed({
            "identity_external_id": _nullable({"type": "string", "maxLength": 255}),
            "model_id": _nullable({"type": "string", "maxLength": 255}),
            "provider": _nullable({"type": "string", "maxLength": 255}),
            "project_id": _nullable({"type": "string", "maxLength": 255}),
            "api_key_id": _nullable({"type": "string", "maxLength": 255}),
            "metadata": _nullable({"type": "object"}),
            "headers": _nullable({"type": "object", "additionalProperties": {"type": "string"}}),
            "estimate": _nullable({"type": "number", "minimum": 0, "maximum": 1_000_000_000,
                                   "multipleOf": 0.000000001})}),
        "BudgetCheckResult": _obj({
            "allowed": {"type": "boolean"},
            "rejection": {"anyOf": [{"type": "null"}, _obj({
                "scope_kind": {"type": "string"}, "scope_target_id": {"type": "string"},
                "dimension": {"type": "string", "enum": ["cost", "tokens", "requests"]},
                "code": {"type": "string"}, "message": {"type": "string"}, "budget_id": {"type": "string"}},
                ["scope_kind", "scope_target_id", "dimension", "code", "message"])]},
            "cost": dimension, "tokens": dimension, "requests": dimension,
        }, ["allowed", "rejection", "cost", "tokens", "requests"]),
        "BudgetForecast": _obj({
            "exhausts_at": {"type": ["string", "null"], "format": "date-time",
                            "description": "When the budget runs out at its recent rate, if before it resets "
                                           "(a one-time budget: within a year); null otherwise."},
            "burn_rate": {"type": "number", "minimum": 0, "description": "USD a day, its recent rate."}},
            ["exhausts_at", "burn_rate"]) | {
            "description": "Our extension: the budget's forecast (see the docs' Budgets page for the formula)."},
        "TopUpRequest": _closed({"amount": {"anyOf": [number, {"type": "string", "pattern": AMOUNT_PATTERN}]},
                                 "idempotency_key": target},
                                ["amount", "idempotency_key"]),
        "TopUp": _obj({"budget_id": {"type": "string"}, "amount": {"type": "number"},
                       "idempotency_key": {"type": "string"}, "created": {"type": "string", "format": "date-time"},
                       "new_limit": {"type": "number"}},
                      ["budget_id", "amount", "idempotency_key", "created", "new_limit"]),
        "TopUpReply": _obj({"top_up": _ref("TopUp")}, ["top_up"]),
        "TopUpList": _obj({"object": {"const": "list"}, "data": {"type": "array", "items": _ref("TopUp")},
                           "has_more": {"type": "boolean"}}, ["object", "data", "has_more"]),
    }


def budget_paths(operation: Any, error: Any, query: Any) -> dict[str, Any]:
    """The paths, built with the main document's helpers (``operation``, ``error``, ``query``)."""
    missing = error("No such budget (`not_found`).")
    invalid = error("Invalid input (`invalid_request`, naming the `field`); a CEL expression that does not parse too.")
    budget_id = {"name": "budget_id", "in": "path", "required": True, "schema": {"type": "string"}}
    body = {"required": True, "content": {"application/json": {"schema": _ref("UpdateScopedBudget")}}}
    return {
        "/v2/budgets": {
            "get": operation("listScopedBudgets", "List budgets, ascending by id unless sort_by says, with usage", {
                "200": _json("A page of budgets.", "ScopedBudgetList"), "400": invalid,
                "404": error("With sort_by, a cursor that names no budget (`not_found`).")}, parameters=[
                query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": 10},
                      "Page size."),
                query("starting_after", {"type": "string"}, "The page after this budget id."),
                query("ending_before", {"type": "string"}, "The page just before this budget id."),
                query("scope_kind", {"type": "string", "enum": [*_KINDS, ""]}, "Repeatable; empty: any."),
                query("scope_target_id", {"type": "string"}, "External id, model id or provider."),
                query("is_active", {"type": "string", "enum": ["true", "false", "1", "0"]}, "Active or not."),
                query("period", {"type": "string", "enum": [*_PERIODS, ""]}, "Repeatable; empty: any."),
                query("query", {"type": "string"}, "Case-insensitive substring of id, scope or target."),
                query("sort_by", {"type": "string", "enum": list(SORT_FIELDS)},
                      "CREATED_AT, UPDATED_AT: newest first; EXPIRES_AT: soonest first, never last. Ties by id.")]),
            "post": operation("createScopedBudget", "Create a budget", {
                "200": _json("The new budget.", "BudgetEnvelope"), "400": invalid,
                "409": error("A budget for this scope, target and period exists (`budget_exists`).")},
                requestBody={"required": True, "content": {"application/json": {
                    "schema": _ref("CreateScopedBudget")}}}),
        },
        "/v2/budgets/check": {
            "post": operation("checkBudgets", "Would a request be admitted now? Nothing is written", {
                "200": _json("The answer: allowed, the refusing budget, the tightest per dimension.",
                             "BudgetCheckResult"), "400": invalid},
                requestBody={"required": False, "content": {"application/json": {"schema": _ref("BudgetCheck")}}}),
        },
        "/v2/budgets/{budget_id}": {
            "parameters": [budget_id],
            "get": operation("getScopedBudget", "A budget with its usage", {
                "200": _json("The budget.", "BudgetEnvelope"), "404": missing}),
            "patch": operation("updateScopedBudget", "Update a budget; fields given replace", {
                "200": _json("The budget.", "BudgetEnvelope"), "400": invalid, "404": missing}, requestBody=body),
            "delete": operation("deleteScopedBudget", "Delete a budget", {
                "200": _json("Deleted.", "Empty"), "404": missing}),
        },
        "/v2/budgets/{budget_id}/reset-consumption": {
            "parameters": [budget_id],
            "post": operation("resetScopedBudget", "Zero this period's consumption", {
                "200": _json("The budget.", "BudgetEnvelope"), "400": invalid, "404": missing}),
        },
        # Credits: our extension, not orq's.
        "/v2/budgets/{budget_id}/top-up": {
            "parameters": [budget_id],
            "post": operation("topUpBudget", "Top up an identity's one-time budget, once per idempotency key", {
                "200": _json("The top-up (the same one again for a repeated key).", "TopUpReply"),
                "400": error("Invalid input, or a budget that takes no top-ups (`invalid_request`)."),
                "404": missing,
                "422": error("The idempotency key topped up another amount (`idempotency_key_reused`).")},
                requestBody={"required": True, "content": {"application/json": {"schema": _ref("TopUpRequest")}}}),
        },
        "/v2/budgets/{budget_id}/top-ups": {
            "parameters": [budget_id],
            "get": operation("listTopUps", "The budget's top-ups, oldest first", {
                "200": _json("The ledger.", "TopUpList"), "404": missing}),
        },
    }
