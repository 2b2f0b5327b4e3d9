"""The admin API's OpenAPI 3.1 document: it lists exactly the served routes and describes what they return."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from identity_middleware.admin import ROUTES, create_admin_app, openapi_document
from identity_middleware.stores import MemoryStore

AUTH = {"Authorization": "Bearer t"}
_TYPES: dict[str, Any] = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = document
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def _errors(document: dict[str, Any], schema: dict[str, Any], value: Any, where: str = "$") -> list[str]:
    """A small JSON Schema check: the keywords this document uses (type, properties, required, items, ...)."""
    schema = _resolve(document, schema)
    if "anyOf" in schema:
        if all(_errors(document, option, value, where) for option in schema["anyOf"]):
            return [f"{where}: matches no anyOf option"]
        return []
    found: list[str] = []
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        ok = any(
            (isinstance(value, int) and not isinstance(value, bool)) if name == "integer"
            else (isinstance(value, (int, float)) and not isinstance(value, bool)) if name == "number"
            else isinstance(value, _TYPES[name])
            for name in types)
        if not ok:
            return [f"{where}: {value!r} is not {types}"]
    if "const" in schema and value != schema["const"]:
        found.append(f"{where}: {value!r} != {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{where}: {value!r} not in {schema['enum']}")
    if "pattern" in schema and isinstance(value, str) and not re.search(schema["pattern"], value):
        found.append(f"{where}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, dict):
        found += [f"{where}: missing {name}" for name in schema.get("required", []) if name not in value]
        for name, item in value.items():
            if name in schema.get("properties", {}):
                found += _errors(document, schema["properties"][name], item, f"{where}.{name}")
            elif schema.get("additionalProperties") is False:
                found.append(f"{where}: unexpected {name}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            found += _errors(document, schema["items"], item, f"{where}[{index}]")
    return found


@pytest.fixture
def document() -> dict[str, Any]:
    return openapi_document()


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_admin_app(MemoryStore(), token="t"), headers=AUTH) as test_client:
        yield test_client


def test_it_is_served_as_openapi_3_1(client: TestClient, document: dict[str, Any]) -> None:
    served = client.get("/openapi.json")
    assert served.status_code == 200 and served.json() == document
    assert document["openapi"] == "3.1.0"
    assert document["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}


def test_it_lists_exactly_the_served_routes_and_methods(document: dict[str, Any]) -> None:
    documented = {(path, method.upper()) for path, item in document["paths"].items()
                  for method in item if method != "parameters"}
    served = {(path, method) for path, methods in ROUTES.items() for method in methods}
    assert documented == served | {("/openapi.json", "GET")}


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for item in node.values():
                yield from refs(item)
        elif isinstance(node, list):
            for item in node:
                yield from refs(item)

    for ref in refs(document):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in document["components"]["schemas"], ref


def test_every_path_parameter_is_declared(document: dict[str, Any]) -> None:
    for path, item in document["paths"].items():
        declared = {param["name"] for param in item.get("parameters", []) if param["in"] == "path"}
        assert declared == set(re.findall(r"\{(\w+)\}", path)), path


def test_the_validator_used_here_catches_a_wrong_response(document: dict[str, Any]) -> None:
    status = {"period": "daily", "amount": 0.2, "spent": "0.00", "reserved": "0.00", "remaining": "0.20",
              "percent": 0.0, "period_start": "x", "resets_at": "y"}
    assert _errors(document, {"$ref": "#/components/schemas/BudgetStatus"}, status) == [
        "$.amount: 0.2 is not ['string']"]
    assert _errors(document, {"$ref": "#/components/schemas/Identity"}, {"_id": "x"})


def _check(client: TestClient, document: dict[str, Any], method: str, path: str, template: str,
           **kwargs: Any) -> Any:
    response = client.request(method, path, **kwargs)
    responses = document["paths"][template][method.lower()]["responses"]
    assert str(response.status_code) in responses, (method, path, response.status_code, response.text)
    content = responses[str(response.status_code)].get("content")
    if content is None:
        assert response.content == b""
        return None
    body = response.json()
    assert _errors(document, content["application/json"]["schema"], body) == [], (method, path, body)
    return body


def test_every_response_matches_its_documented_schema(client: TestClient, document: dict[str, Any]) -> None:
    one, many = "/v2/identities/{identity_id}", "/v2/identities"
    budget, budgets = one + "/budgets/{period}", one + "/budgets"
    reset = budget + "/reset"
    created = _check(client, document, "POST", many, many, json={
        "external_id": "u1", "display_name": "U", "email": "u@example.com", "tags": ["t"], "metadata": {"k": 1},
        "budgets": [{"period": "daily", "amount": "0.5"}]})
    _check(client, document, "POST", many, many, json={"external_id": "u2"})
    _check(client, document, "POST", many, many, json={"external_id": "u1"})  # 409
    _check(client, document, "POST", many, many, json={"external_id": "x", "email": "bad"})  # 400
    _check(client, document, "GET", f"{many}/{created['identity']['_id']}?include_metrics=1&include_budgets=1", one)
    _check(client, document, "GET", f"{many}/u1?include_budget=true&include_metrics=true", one)
    _check(client, document, "GET", f"{many}/missing", one)  # 404
    _check(client, document, "PATCH", f"{many}/u2", one, json={"display_name": None, "logo_url": "https://a"})
    _check(client, document, "PATCH", f"{many}/u1", one, json={"email": "", "display_name": "", "tags": []})
    _check(client, document, "GET", f"{many}?include_metrics=true&include_budgets=true&limit=1", many)
    _check(client, document, "GET", f"{many}?include_budget=true&sort_by=IDENTITY_SORT_FIELD_UPDATED", many)
    _check(client, document, "GET",
           f"{many}?filter_by.tags=t&filter_by.tags=u&sort_by=IDENTITY_SORT_FIELD_DISPLAY_NAME", many)
    _check(client, document, "GET", f"{many}?sort_by=IDENTITY_SORT_FIELD_UPDATED&starting_after={'0' * 26}",
           many)  # 404
    _check(client, document, "GET", f"{many}?sort_by=name", many)  # 400
    _check(client, document, "GET", f"{many}?limit=0", many)  # 400
    _check(client, document, "PUT", f"{many}/u2/budgets/monthly", budget, json={"amount": "12.5"})
    _check(client, document, "PUT", f"{many}/u2/budgets/monthly", budget, json={"amount": "-1"})  # 400
    _check(client, document, "GET", f"{many}/u2/budgets/monthly", budget)
    _check(client, document, "GET", f"{many}/u2/budgets/weekly", budget)  # 404
    _check(client, document, "GET", f"{many}/u2/budgets", budgets)
    _check(client, document, "POST", f"{many}/u2/budgets/monthly/reset", reset)
    daily = "/v2/identities/{identity_id}/metrics/daily"
    _check(client, document, "GET", f"{many}/u2/metrics/daily?days=7", daily)
    _check(client, document, "GET", f"{many}/u2/metrics/daily?days=31", daily)  # 400
    _check(client, document, "GET", f"{many}/nobody/metrics/daily", daily)  # 404
    _check(client, document, "DELETE", f"{many}/u2/budgets/monthly", budget)  # 204
    _check(client, document, "DELETE", f"{many}/u2", one)  # 200 {}
    _check(client, document, "GET", many, many, headers={"Authorization": "Bearer wrong"})  # 401
