"""The admin API's OpenAPI 3.1 document: response schemas generated from the core models, operations by hand."""

from __future__ import annotations

import copy
import functools
from typing import Any

from pydantic.json_schema import models_json_schema

from ..core.models import BudgetStatus, DailyMetrics, Identity, Metrics
from ..core.periods import Period
from ..stores.base import MAX_PAGE_SIZE, METRIC_DAYS
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
    # to_json() always sends every profile field (null when unset); metrics/budgets only when asked,
    # last_source only once a request told it.
    optional = ("metrics", "budgets", "last_source")
    identity["required"] = [name for name in identity["properties"] if name not in optional]
    identity["properties"]["metrics"] = _ref("Metrics")
    identity["properties"]["budgets"] = {"type": "array", "items": _ref("BudgetStatus")}
    identity["properties"]["_id"]["description"] = "ULID, ascending in creation order."
    for name in ("amount", "spent", "reserved", "remaining"):
        schemas["BudgetStatus"]["properties"][name]["pattern"] = MONEY_PATTERN
    schemas["Metrics"]["properties"]["total_cost"]["pattern"] = MONEY_PATTERN
    schemas["Metrics"]["required"] = list(schemas["Metrics"]["properties"])
    schemas["DailyMetrics"]["properties"]["cost"]["pattern"] = MONEY_PATTERN
    schemas["DailyMetrics"]["required"] = list(schemas["DailyMetrics"]["properties"])
    return schemas


def _hand_schemas() -> dict[str, Any]:
    money_in = {"anyOf": [{"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"}, {"type": "number"}],
                "description": "USD, > 0; a decimal string is exact."}
    profile: dict[str, Any] = {
        "display_name": {"type": ["string", "null"], "maxLength": 1024},
        "email": {"type": ["string", "null"], "format": "email"},
        "avatar_url": {"type": ["string", "null"]},
        "logo_url": {"type": ["string", "null"], "description": "Alias of avatar_url."},
        "tags": {"type": ["array", "null"], "items": {"type": "string"}, "maxItems": 10},
        "metadata": {"anyOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}, {"type": "null"}],
                     "description": "At most 20 fields; an array of objects is merged."},
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {"type": {"type": "string"}, "message": {"type": "string"},
                               "field": {"type": "string"}},
            }},
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
            "properties": {
                "external_id": {"type": "string", "minLength": 1, "maxLength": 255},
                "id": {"type": "string", "minLength": 1, "maxLength": 255, "description": "Alias of external_id."},
                **profile,
                "budgets": {"type": "array", "items": {
                    "type": "object", "required": ["period", "amount"],
                    "properties": {"period": _ref("Period"), "amount": money_in}}},
            },
        },
        "UpdateIdentity": {"type": "object", "properties": profile},
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
_ID = {"name": "identity_id", "in": "path", "required": True, "schema": {"type": "string"},
       "description": "The identity's `_id` (ULID) or `external_id`."}
_PERIOD = {"name": "period", "in": "path", "required": True, "schema": _ref("Period")}
_INCLUDES = [_query("include_metrics", _FLAG, "Add 30-day `metrics`."),
             _query("include_budgets", _FLAG, "Add live `budgets`.")]


def _paths() -> dict[str, Any]:
    missing = _error("No such identity or budget (`not_found`).")
    invalid = _error("Invalid input (`invalid_identity` or `invalid_request`, naming the `field`).")
    return {
        "/v2/identities": {
            "get": _operation("listIdentities", "List identities, ascending by _id", {
                "200": _ok("A page of identities.", "IdentityList"), "400": invalid}, parameters=[
                _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": 10},
                       "Page size."),
                _query("starting_after", {"type": "string"}, "The page after this `_id`."),
                _query("ending_before", {"type": "string"}, "The page just before this `_id`."),
                _query("search", {"type": "string"},
                       "Case-insensitive substring of external id, display name or email."),
                _query("tags", {"type": "string"}, "Comma-separated; identities with any of them."),
                *_INCLUDES]),
            "post": _operation("createIdentity", "Create an identity (optionally with budgets)", {
                "201": _ok("The new record.", "Identity"), "400": invalid,
                "409": _error("The external_id exists (`identity_exists`).")}, requestBody=_body("CreateIdentity")),
        },
        "/v2/identities/{identity_id}": {
            "parameters": [_ID],
            "get": _operation("retrieveIdentity", "Retrieve an identity by _id or external_id", {
                "200": _ok("The record.", "Identity"), "400": invalid, "404": missing}, parameters=_INCLUDES),
            "patch": _operation("updateIdentity", "Update fields; those given replace, the rest stay", {
                "200": _ok("The updated record.", "Identity"), "400": invalid, "404": missing},
                requestBody=_body("UpdateIdentity")),
            "delete": _operation("deleteIdentity", "Delete an identity, its budgets and counters", {
                "204": {"description": "Deleted."}, "404": missing}),
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
    schemas = {**_model_schemas(), **_hand_schemas(), **budget_schemas()}
    schemas["Period"] = {"type": "string", "enum": [period.value for period in Period]}
    return {
        "openapi": "3.1.0",
        "info": {"title": "identity-middleware admin API", "version": "1",
                 "description": "Identities, budgets and 30-day metrics; shaped after orq.ai /v2/identities. "
                                "Money is a decimal string in USD."},
        "paths": {**_paths(), **budget_paths(_operation, _error, _query)},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def openapi_document() -> dict[str, Any]:
    """A fresh copy of the document (callers may mutate it, e.g. to set ``servers``)."""
    return copy.deepcopy(_document())
