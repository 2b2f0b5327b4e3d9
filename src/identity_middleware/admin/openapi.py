"""The admin API's OpenAPI 3.1 document: response schemas generated from the core models, operations by hand."""

from __future__ import annotations

import copy
import functools
from typing import Any

from pydantic.json_schema import models_json_schema

from ..core.models import BudgetStatus, DailyMetrics, Identity, Metrics
from ..core.money import AMOUNT_PATTERN, MAX_AMOUNT
from ..core.periods import Period
from ..core.validation import MAX_METADATA_FIELDS, MAX_TAGS, MAX_TEXT_LENGTH
from ..stores.base import MAX_PAGE_SIZE, METRIC_DAYS
from .identities import SORT_FIELDS
from .openapi_analytics import analytics_paths, analytics_schemas
from .openapi_budgets import budget_paths, budget_schemas

__all__ = ["MONEY_PATTERN", "openapi_document"]

MONEY_PATTERN = r"^-?[0-9]+\.[0-9]{2,}$"
_REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _model_schemas() -> dict[str, Any]:
    _, top = models_json_schema(
        [(Identity, "serialization"), (BudgetStatus, "serialization"), (Metrics, "serialization"),
         (DailyMetrics, "serialization")],
        ref_template=_REF,
    )
    schemas: dict[str, Any] = top["$defs"]
    identity = schemas["Identity"]
    properties = identity["properties"]
    # orq's record: workspace_id after external_id; the singular budget when include_budget asks.
    identity["properties"] = {"_id": properties.pop("_id"), "external_id": properties.pop("external_id"),
                              "workspace_id": {"type": "string", "title": "Workspace Id"}, **properties,
                              "budget": _ref("IdentityBudget")}
    # to_json() always sends every profile field (null when unset); metrics/budget(s) only when asked,
    # last_source only once a request told it.
    optional = ("metrics", "budgets", "budget", "last_source")
    identity["required"] = [name for name in identity["properties"] if name not in optional]
    identity["properties"]["metrics"] = _ref("Metrics")
    identity["properties"]["budgets"] = {"type": "array", "items": _ref("BudgetStatus")}
    identity["properties"]["_id"]["description"] = "ULID, ascending in creation order."
    for name in ("amount", "spent", "reserved", "remaining"):
        schemas["BudgetStatus"]["properties"][name]["pattern"] = MONEY_PATTERN
    # orq's metrics: money as JSON numbers, written from the exact decimal.
    schemas["Metrics"]["properties"]["total_cost"] = {"type": "number", "description": "USD, exact decimal."}
    schemas["ModelMetrics"]["properties"]["cost"] = {"type": "number", "description": "USD, exact decimal."}
    schemas["Metrics"]["required"] = list(schemas["Metrics"]["properties"])
    schemas["DailyMetrics"]["properties"]["cost"]["pattern"] = MONEY_PATTERN
    schemas["DailyMetrics"]["required"] = list(schemas["DailyMetrics"]["properties"])
    return schemas


def _hand_schemas() -> dict[str, Any]:
    money_in = {"anyOf": [{"type": "string", "pattern": _POSITIVE_USD},
                          {"type": "number", "minimum": 0.000000001, "maximum": int(MAX_AMOUNT),
                           "multipleOf": 0.000000001}],
                "description": f"USD, > 0 and at most {MAX_AMOUNT}, whole nano-dollars (at most nine decimal "
                               "places); a decimal string is exact."}
    text = {"type": ["string", "null"], "maxLength": MAX_TEXT_LENGTH, "pattern": _NO_CONTROL}
    profile: dict[str, Any] = {
        "display_name": text,
        "email": {"anyOf": [{"type": "string", "maxLength": MAX_TEXT_LENGTH, "pattern": _EMAIL,
                             "description": "The shape checked: one @, a dot in the domain, no spaces."},
                            {"type": "null"}]},
        "avatar_url": text,
        "logo_url": {**text, "description": "Alias of avatar_url."},
        "tags": {"type": ["array", "null"], "maxItems": MAX_TAGS,
                 "items": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": _NO_CONTROL}},
        "metadata": {"type": ["object", "null"], "maxProperties": MAX_METADATA_FIELDS,
                     "description": f"At most {MAX_METADATA_FIELDS} fields."},
    }
    cleared = {"type": "string", "const": "", "description": "An empty string clears the field."}
    update = {**profile, **{name: {"anyOf": [profile[name], cleared]}
                            for name in ("display_name", "email", "avatar_url", "logo_url")}}
    return {
        "Error": {
            "type": "object",
            "description": "orq's ErrorResponse (message, code: the HTTP status) with our typed error beside it.",
            "required": ["message", "code", "error"],
            "properties": {"message": {"type": "string"}, "code": {"type": "integer"}, "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {"type": {"type": "string"}, "message": {"type": "string"},
                               "field": {"type": "string"}},
            }},
        },
        "IdentityReply": {"type": "object", "required": ["identity"], "properties": {"identity": _ref("Identity")}},
        "Deleted": {"type": "object", "maxProperties": 0, "description": "An empty object."},
        "IdentityBudget": {
            "type": "object",
            "description": "orq's singular Budget: the identity's budget that resets last (`include_budget`).",
            "required": ["budget_id", "limits", "created_at", "updated_at"],
            "properties": {
                "budget_id": {"type": "string"},
                "scope": {"type": "object", "properties": {"identity": {
                    "type": "object", "properties": {"identity_external_id": {"type": "string"}}}}},
                "limits": {"type": "object", "required": ["period", "amount"], "properties": {
                    "period": {"enum": [f"BUDGET_PERIOD_{period.name}" for period in Period]},
                    "amount": {"type": "number", "description": "USD, exact decimal."}}},
                "is_active": {"type": "boolean"},
                "created_at": {"type": "string", "format": "date-time"},
                "updated_at": {"type": "string", "format": "date-time"},
                "forecast": _ref("BudgetForecast"),
            },
        },
        "IdentityList": {
            "type": "object",
            "required": ["object", "data", "has_more"],
            "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": _ref("Identity")},
                           "has_more": {"type": "boolean"}},
        },
        "BudgetList": {
            "type": "object",
            "required": ["object", "data"],
            "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": _ref("BudgetStatus")}},
        },
        "DailyMetricsList": {
            "type": "object",
            "required": ["object", "data"],
            "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": _ref("DailyMetrics")}},
        },
        "BudgetInput": {"type": "object", "required": ["amount"], "properties": {"amount": money_in}},
        "CreateIdentity": {
            "type": "object",
            "description": "external_id (or id) is required.",
            "anyOf": [{"required": ["external_id"]}, {"required": ["id"]}],
            "properties": {
                "external_id": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": _NO_CONTROL},
                "id": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": _NO_CONTROL,
                       "description": "Alias of external_id."},
                **profile,
                "budgets": {"type": ["array", "null"], "maxItems": len(Period), "items": {
                    "type": "object", "required": ["period", "amount"],
                    "properties": {"period": _ref("Period"), "amount": money_in}},
                    "description": "At most one per period.",
                    "allOf": [{"contains": {"properties": {"period": {"const": period.value}}}, "minContains": 0,
                               "maxContains": 1} for period in Period]},
            },
        },
        "UpdateIdentity": {"type": "object", "properties": update},
    }


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


def _body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(schema)}}}


def _operation(operation_id: str, summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    common = {"401": _error("Missing or wrong bearer token (`unauthorized`)."),
              "503": _error("The store is unavailable (`store_unavailable`).")}
    return {"operationId": operation_id, "summary": summary, **extra, "responses": {**responses, **common}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_FLAG = {"type": "string", "enum": ["true", "false", "1", "0"]}
_ULID = {"type": "string", "pattern": "^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$"}
_CONTROL = "\\u0000-\\u001f\\u007f-\\u009f"
_NO_CONTROL = f"^[^{_CONTROL}]*$"
# A decimal string above 0 and at most 1e9 (core.money.MAX_AMOUNT), leading zeros allowed.
_POSITIVE_USD = AMOUNT_PATTERN  # exactly what the server accepts as text
_EMAIL = f"^[^@\\s{_CONTROL}]+@[^@\\s{_CONTROL}]+\\.[^@\\s{_CONTROL}]+$"
_ID = {"name": "identity_id", "in": "path", "required": True, "schema": {"type": "string"},
       "description": "The identity's `_id` (ULID) or `external_id`."}
_PERIOD = {"name": "period", "in": "path", "required": True, "schema": _ref("Period")}
_INCLUDES = [_query("include_metrics", _FLAG, "Add 30-day `metrics` (money as exact JSON numbers)."),
             _query("include_budget", _FLAG, "Add orq's singular `budget`: the one that resets last."),
             _query("include_budgets", _FLAG, "Add live `budgets` (extension; money as decimal strings).")]


def _paths() -> dict[str, Any]:
    missing = _error("No such identity or budget (`not_found`).")
    invalid = _error("Invalid input (`invalid_identity` or `invalid_request`, naming the `field`).")
    return {
        "/v2/identities": {
            "get": _operation("listIdentities", "List identities, ascending by _id unless sort_by says", {
                "200": _ok("A page of identities.", "IdentityList"), "400": invalid,
                "404": _error("With sort_by, a cursor that names no identity (`not_found`).")}, parameters=[
                _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": 10},
                       "Page size."),
                _query("starting_after", _ULID, "The page after this `_id`."),
                _query("ending_before", _ULID, "The page just before this `_id`."),
                _query("search", {"type": "string"},
                       "Case-insensitive substring of external id, display name or email."),
                # A string, though it may repeat: on the wire an array of strings and a string look the
                # same, and a declared array makes contract testers send "wrong type" values that are not.
                _query("filter_by.tags", {"type": "string"},
                       "Identities having all of them (repeat the parameter, or join with commas)."),
                _query("tags", {"type": "string"}, "Comma-separated; identities with any of them (extension)."),
                _query("sort_by", {"type": "string", "enum": list(SORT_FIELDS)},
                       "A to Z by display name (nameless last), or most recently updated first."),
                *_INCLUDES]),
            "post": _operation("createIdentity", "Create an identity (optionally with budgets)", {
                "201": _ok("The new record.", "IdentityReply"), "400": invalid,
                "409": _error("The external_id exists (`identity_exists`).")}, requestBody=_body("CreateIdentity")),
        },
        "/v2/identities/{identity_id}": {
            "parameters": [_ID],
            "get": _operation("retrieveIdentity", "Retrieve an identity by _id or external_id", {
                "200": _ok("The record.", "IdentityReply"), "400": invalid, "404": missing}, parameters=_INCLUDES),
            "patch": _operation("updateIdentity", "Update fields; those given replace, the rest stay", {
                "200": _ok("The updated record.", "IdentityReply"), "400": invalid, "404": missing},
                requestBody=_body("UpdateIdentity")),
            "delete": _operation("deleteIdentity", "Delete an identity, its budgets and counters", {
                "200": _ok("Deleted.", "Deleted"), "404": missing}),
        },
        "/v2/identities/{identity_id}/budgets": {
            "parameters": [_ID],
            "get": _operation("listBudgets", "Live status of every budget", {
                "200": _ok("Budgets, daily first.", "BudgetList"), "404": missing}),
        },
        "/v2/identities/{identity_id}/budgets/{period}": {
            "parameters": [_ID, _PERIOD],
            "get": _operation("getBudget", "Live status of one budget", {
                "200": _ok("The budget's status.", "BudgetStatus"), "400": invalid, "404": missing}),
            "put": _operation("setBudget", "Set (create or replace) a budget", {
                "200": _ok("The budget's status.", "BudgetStatus"), "400": invalid, "404": missing},
                requestBody=_body("BudgetInput")),
            "delete": _operation("removeBudget", "Remove a budget", {
                "204": {"description": "Removed."}, "400": invalid, "404": missing}),
        },
        "/v2/identities/{identity_id}/budgets/{period}/reset": {
            "parameters": [_ID, _PERIOD],
            "post": _operation("resetBudget", "Zero the current period's spend", {
                "200": _ok("The budget's status after the reset.", "BudgetStatus"), "400": invalid,
                "404": missing}),
        },
        "/v2/identities/{identity_id}/metrics/daily": {
            "parameters": [_ID],
            "get": _operation("dailyMetrics", "Usage per UTC day, oldest first (extension)", {
                "200": _ok("One entry per day, zeros included.", "DailyMetricsList"), "400": invalid,
                "404": missing}, parameters=[
                _query("days", {"type": "integer", "minimum": 1, "maximum": METRIC_DAYS, "default": METRIC_DAYS},
                       "How many days up to today.")]),
        },
        "/openapi.json": {
            "get": _operation("openapi", "This document", {
                "200": {"description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": {"type": "object"}}}}}),
        },
    }


@functools.cache
def _document() -> dict[str, Any]:
    schemas = {**_model_schemas(), **_hand_schemas(), **budget_schemas(), **analytics_schemas()}
    schemas["Period"] = {"type": "string", "enum": [period.value for period in Period]}
    return {
        "openapi": "3.1.0",
        "info": {"title": "identity-middleware admin API", "version": "1",
                 "description": "Identities, budgets and 30-day metrics; shaped after orq.ai /v2/identities. "
                                "Money is a decimal string in USD."},
        "paths": {**_paths(), **budget_paths(_operation, _error, _query),
                  **analytics_paths(_operation, _error, _query)},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def openapi_document() -> dict[str, Any]:
    """A fresh copy of the document (callers may mutate it, e.g. to set ``servers``)."""
    return copy.deepcopy(_document())
