"""The admin app's dashboard files, daily metrics and Prometheus ``/metrics`` over plain HTTP."""

from __future__ import annotations

from decimal import Decimal

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from identity_middleware import Budget, IdentityInput
from identity_middleware.admin import create_admin_app
from identity_middleware.core.admission import AdmissionRequest
from identity_middleware.stores import MemoryStore

AUTH = {"Authorization": "Bearer t0ken"}


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def client(store: MemoryStore) -> TestClient:
    return TestClient(Starlette(routes=[Mount("/admin", create_admin_app(store, token="t0ken"))]))


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_the_dashboard_is_served_at_the_root_of_the_mount_with_a_strict_csp(client: TestClient) -> None:
    page = client.get("/admin/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert 'src="static/app.js"' in page.text and "http" not in page.text.replace("http://www.w3.org", "")
    assert client.get("/admin", follow_redirects=False).headers["location"].endswith("/admin/")


def test_its_files_ship_in_the_package_and_nothing_else_is_served(client: TestClient) -> None:
    script = client.get("/admin/static/app.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert client.get("/admin/static/app.css").headers["x-content-type-options"] == "nosniff"
    assert client.get("/admin/static/../app.py").status_code == 404
    assert client.get("/admin/static/missing.js").status_code == 404


def test_daily_metrics_route_lists_30_days_with_exact_cost(client: TestClient, store: MemoryStore) -> None:
    store.create(IdentityInput(id="a"))
    store.record("a", cost=Decimal("0.0000001"), input_tokens=3)
    days = client.get("/admin/v2/identities/a/metrics/daily", headers=AUTH).json()["data"]
    assert len(days) == 30 and days[-1]["cost"] == "0.0000001" and days[-1]["input_tokens"] == 3
    assert days[0]["cost"] == "0.00" and days[0]["day"] < days[-1]["day"]
    assert client.get("/admin/v2/identities/a/metrics/daily").status_code == 401


def test_the_record_carries_last_source_once_a_request_told_it(client: TestClient, store: MemoryStore) -> None:
    store.admit(AdmissionRequest("a", last_source="header"))
    assert client.get("/admin/v2/identities/a", headers=AUTH).json()["identity"]["last_source"] == "header"


def test_metrics_need_the_token(client: TestClient) -> None:
    assert client.get("/admin/metrics").status_code == 401
    assert client.get("/admin/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_metrics_token_replaces_the_admin_token_for_metrics_only(store: MemoryStore) -> None:
    client = TestClient(create_admin_app(store, token="admin", metrics_token="scrape"))
    assert client.get("/metrics", headers={"Authorization": "Bearer scrape"}).status_code == 200
    assert client.get("/metrics", headers={"Authorization": "Bearer admin"}).status_code == 401
    assert client.get("/v2/identities", headers={"Authorization": "Bearer scrape"}).status_code == 401


def test_metrics_report_usage_and_budgets_per_identity(client: TestClient, store: MemoryStore) -> None:
    store.create(IdentityInput(id="a"))
    store.set_budget("a", Budget(period="daily", amount=Decimal("0.20")))
    store.record("a", cost=Decimal("0.05"), input_tokens=10, output_tokens=4)
    store.record("a", cost=Decimal("0.15"), error=True)
    reply = client.get("/admin/metrics", headers=AUTH)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    values = samples(reply.text)
    one = (("identity", "a"),)
    daily = (("identity", "a"), ("period", "daily"))
    assert values[("identity_middleware_cost_30d_usd", one)] == pytest.approx(0.2)
    assert values[("identity_middleware_requests_30d", one)] == 2
    assert values[("identity_middleware_errors_30d", one)] == 1
    assert values[("identity_middleware_tokens_30d", (("direction", "input"), ("identity", "a")))] == 10
    assert values[("identity_middleware_budget_consumed_ratio", daily)] == pytest.approx(1.0)
    assert values[("identity_middleware_budget_blocking", daily)] == 1
    assert values[("identity_middleware_budget_spent_usd", daily)] == pytest.approx(0.2)


def test_metrics_label_the_top_identities_and_sum_the_rest(store: MemoryStore) -> None:
    client = TestClient(create_admin_app(store, token=None, metrics_top=2))
    for n in range(5):
        store.create(IdentityInput(id=f"u{n}"))
        store.set_budget(f"u{n}", Budget(period="daily", amount=Decimal("0.01")))
        store.record(f"u{n}", cost=Decimal(n) / 100)
    values = samples(client.get("/metrics").text)
    costs = {labels: value for (name, labels), value in values.items() if name == "identity_middleware_cost_30d_usd"}
    assert costs == {(("identity", "u4"),): pytest.approx(0.04), (("identity", "u3"),): pytest.approx(0.03),
                     (("identity", "__other__"),): pytest.approx(0.03)}
    assert values[("identity_middleware_identities", ())] == 5
    assert values[("identity_middleware_identities_other", ())] == 3
    assert values[("identity_middleware_budgets_blocking_other", ())] == 2  # u1, u2 spent 0.01 of 0.01
    assert not any(dict(labels).get("identity") == "u0" for _, labels in values)


def test_metrics_top_must_be_positive(store: MemoryStore) -> None:
    with pytest.raises(ValueError):
        create_admin_app(store, token=None, metrics_top=0)
