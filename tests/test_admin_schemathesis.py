"""Schemathesis, every check, against the served admin API: positive and negative cases from its OpenAPI
document, a bounded number per operation, sent over HTTP to uvicorn."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from schemathesis.core.parameters import ParameterLocation

from browser import live_server
from identity_middleware.admin import create_admin_app, openapi_document
from identity_middleware.core.models import Budget, IdentityInput
from identity_middleware.stores import MemoryStore

TOKEN = "schemathesis-token"
MAX_EXAMPLES = 10  # per operation and generation mode; the coverage phase adds its own boundary cases

CONFIG = schemathesis.Config.from_dict({
    "generation": {"mode": "all", "max-examples": MAX_EXAMPLES},
    # A CEL expression's validity is a grammar no JSON Schema expresses: a schema-valid `match.cel` that
    # does not parse is a 400 naming it, on the two operations that take one (create, update).
    "operations": [{
        "include-path-regex": "^/v2/budgets(/\\{budget_id\\})?$",
        "include-method": ["POST", "PATCH"],
        "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "3xx", "400", "401", "403", "404",
                                                                        "409", "429", "5xx"]}},
    }],
})
schema = schemathesis.openapi.from_dict(openapi_document(), config=CONFIG)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    store = MemoryStore()
    # Something to find, so that positive cases reach records and budgets too.
    for n in range(3):
        store.create(IdentityInput(id=f"user_{n}", display_name=f"User {n}", tags=["a", "b"][: n + 1]))
    store.set_budget("user_0", Budget(period="daily", amount="1"))
    with live_server(create_admin_app(store, token=TOKEN)) as url:
        yield url


@schema.parametrize()
def test_the_served_api_conforms_to_its_openapi_document(case: schemathesis.Case, base_url: str) -> None:
    # A case whose headers schemathesis made invalid on purpose (the required Authorization left out
    # or mangled) goes as generated: adding the token would make it a valid request again, which the
    # API then rightly accepts (seen as "schema-violating request accepted").
    negative_headers = case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER)
    headers = None if negative_headers else {"Authorization": f"Bearer {TOKEN}"}
    case.call_and_validate(base_url=base_url, headers=headers)
