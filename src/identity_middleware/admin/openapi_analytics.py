"""The OpenAPI part of the console's extension routes (``/v2/analytics/...``), which orq's SDK never calls."""

from __future__ import annotations

from typing import Any

from ..stores.refusals import REFUSAL_LOG_SIZE
from .overview import RANGES

__all__ = ["analytics_paths", "analytics_schemas"]

_USD = {"type": "string", "pattern": "^-?[0-9]+\\.[0-9]+$"}
_COUNT = {"type": "integer", "minimum": 0}
_TEXT_OR_NULL = {"type": ["string", "null"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties)}


def analytics_schemas() -> dict[str, Any]:
    usage = {"cost": _USD, "requests": _COUNT, "tokens": _COUNT, "input_tokens": _COUNT, "output_tokens": _COUNT,
             "errors": _COUNT}
    refusal = _object({"at": {"type": "string", "format": "date-time"}, "external_id": {"type": "string"},
                       "identity_id": {"type": "string"}, "budget_id": _TEXT_OR_NULL, "scope": _TEXT_OR_NULL,
                       "period": {"type": "string"}, "amount": _USD, "spent": _USD, "reserved": _USD,
                       "estimate": _USD})
    return {
        "Refusal": refusal,
        "RefusalList": _object({"object": {"const": "list"}, "data": {"type": "array", "items": _ref("Refusal")}}),
        "IdentityCount": _object({"object": {"const": "count"}, "total": _COUNT}),
        "Overview": _object({
            "object": {"const": "overview"}, "range": {"enum": list(RANGES)}, "granularity": {"enum": ["hour", "day"]},
            "models_days": {"type": ["integer", "null"], "minimum": 1},
            "models_hours": {"type": ["integer", "null"], "minimum": 1},
            "totals": _object({**usage, "start": {"type": "string"}, "identities": _COUNT,
                               "error_rate": {"type": "number", "minimum": 0, "maximum": 1}}),
            "series": {"type": "array", "items": _object({**usage, "start": {"type": "string"}})},
            "models": {"type": "array", "items": _object({"model": {"type": "string"}, "requests": _COUNT, "cost": _USD,
                                                          "input_tokens": _COUNT, "output_tokens": _COUNT})},
            "top_spenders": {"type": "array", "items": _object({
                "_id": {"type": "string"}, "external_id": {"type": "string"}, "display_name": _TEXT_OR_NULL,
                "cost": _USD, "requests": _COUNT, "tokens": _COUNT, "errors": _COUNT})},
            "budgets_at_risk": {"type": "array", "items": _object({
                "budget_id": {"type": "string"}, "scope": {"type": "string"}, "target": {"type": "string"},
                "period": {"type": "string"}, "amount": {"anyOf": [_USD, {"type": "null"}]}, "spent": _USD,
                "token_limit": {"type": ["integer", "null"]}, "tokens": _COUNT, "percent": {"type": "number"},
                "state": {"enum": ["at_risk", "over", "forecast"]},
                "exhausts_at": {"type": ["string", "null"], "format": "date-time"}})},
            "refusals": {"type": "array", "items": _ref("Refusal")},
        }),
    }


def analytics_paths(operation: Any, error: Any, query: Any) -> dict[str, Any]:
    """The paths, built with the main document's helpers (``operation``, ``error``, ``query``)."""
    invalid = error("Invalid input (`invalid_request`, naming the `field`).")

    def ok(description: str, schema: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}

    def csv(description: str) -> dict[str, Any]:
        return {"description": description, "content": {"text/csv": {"schema": {"type": "string"}}}}

    filters = [query("search", {"type": "string"}, "Substring of external id, display name or email."),
               query("tags", {"type": "string"}, "Any of these tags (comma-separated).")]
    return {
        "/v2/analytics/overview": {"get": operation("workspaceOverview", "The workspace over a range (extension)", {
            "200": ok("Totals, buckets, models, top spenders, budgets at risk, recent refusals.", "Overview"),
            "400": invalid}, parameters=[query("range", {"type": "string", "enum": list(RANGES), "default": "7d"},
                                               "24h (by hour, or by day where the store keeps no hours), 7d, 30d.")])},
        "/v2/analytics/refusals": {"get": operation("recentRefusals", "The refusal log, newest first (extension)", {
            "200": ok("Refusals.", "RefusalList"), "400": invalid}, parameters=[
            query("limit", {"type": "integer", "minimum": 1, "maximum": REFUSAL_LOG_SIZE, "default": 50},
                  "How many.")])},
        "/v2/analytics/refusals/export": {"get": operation("exportRefusals", "The refusal log as CSV (extension)", {
            "200": csv("One row per refusal, newest first."), "400": invalid})},
        "/v2/analytics/identities/count": {"get": operation("countIdentities", "How many identities match (extension)",
                                                            {"200": ok("The count.", "IdentityCount"), "400": invalid},
                                                            parameters=filters)},
        "/v2/analytics/identities/export": {"get": operation("exportIdentities", "Identities as CSV (extension)", {
            "200": csv("One row per identity: 30-day numbers and its tightest budget."), "400": invalid},
            parameters=filters)},
    }
