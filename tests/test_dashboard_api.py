"""The console's admin extensions over HTTP: the overview, the refusal log, counts, CSV exports, conditional
GETs, ``budget_blocking`` for estimate refusals; and the dashboard and ``/metrics`` served by Django's URLconf."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import django
import pytest
from django.apps import apps
from django.conf import settings
from django.test import Client, override_settings
from django.urls import include, path
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from identity_middleware import Budget, IdentityInput
from identity_middleware.admin import create_admin_app
from identity_middleware.admin import overview as overview_module
from identity_middleware.admin.django import close_stores
from identity_middleware.admin.recent import FRESH
from identity_middleware.core.admission import AdmissionRequest
from identity_middleware.stores import Store

if not settings.configured:
    settings.configure(SECRET_KEY="dashboard-tests", ALLOWED_HOSTS=["testserver"], INSTALLED_APPS=[],
                       MIDDLEWARE=[], DATABASES={}, USE_TZ=True, ROOT_URLCONF=__name__)
if not apps.ready:
    django.setup()

AUTH = {"Authorization": "Bearer t0ken"}
NANOS = 1_000_000_000


@pytest.fixture
def client(store: Store) -> TestClient:
    return TestClient(create_admin_app(store, token="t0ken"))


def refuse(store: Store, external_id: str, estimate: int = 0) -> None:
    assert store.admit(AdmissionRequest(external_id, estimate=estimate)).blocked is not None


def test_the_overview_sums_the_workspace_and_sorts_the_top_spenders(client: TestClient, store: Store) -> None:
    now = datetime.now(UTC)
    for name, cost in (("small", "0.01"), ("big", "0.50"), ("mid", "0.20")):
        store.create(IdentityInput(id=name, display_name=name.title()))
        store.record(name, cost=Decimal(cost), input_tokens=10, output_tokens=5, model="gpt-4o", now=now)
    store.record("mid", error=True, now=now)
    store.record("big", cost=Decimal("9"), now=now - timedelta(days=10))  # outside 7 days, inside 30
    store.create(IdentityInput(id="idle"))
    week = client.get("/v2/analytics/overview?range=7d", headers=AUTH).json()
    assert week["granularity"] == "day" and len(week["series"]) == 7
    assert week["totals"] | {"start": ""} == {"start": "", "cost": "0.71", "requests": 4, "tokens": 45,
                                              "input_tokens": 30, "output_tokens": 15, "errors": 1,
                                              "identities": 4, "error_rate": 0.25}
    assert [row["external_id"] for row in week["top_spenders"]] == ["big", "mid", "small"]  # idle spent nothing
    assert week["models"] == [{"model": "gpt-4o", "requests": 3, "cost": "0.71", "input_tokens": 30,
                               "output_tokens": 15}]
    month = client.get("/v2/analytics/overview?range=30d", headers=AUTH).json()
    assert len(month["series"]) == 30 and month["totals"]["cost"] == "9.71"
    assert month["top_spenders"][0] == {"_id": store.retrieve("big").id, "external_id": "big", "display_name": "Big",
                                        "cost": "9.50", "requests": 2, "tokens": 15, "errors": 0}


def test_the_last_24_hours_come_by_hour_on_every_store(client: TestClient, store: Store) -> None:
    now = datetime.now(UTC)
    store.create(IdentityInput(id="a"))
    store.create(IdentityInput(id="b"))
    store.record("a", cost=Decimal("0.10"), input_tokens=3, output_tokens=4, model="gpt-4o", now=now)
    store.record("b", cost=Decimal("0.05"), error=True, now=now - timedelta(hours=3))
    store.record("a", cost=Decimal("1"), model="o1", now=now - timedelta(hours=30))  # before the 24 hours
    store.set_budget("b", Budget(period="yearly", amount=Decimal("0.05")))
    assert store.admit(AdmissionRequest("b", now=now)).blocked is not None  # a request and an error of its hour
    day = client.get("/v2/analytics/overview?range=24h", headers=AUTH).json()
    assert day["granularity"] == "hour" and len(day["series"]) == 24
    hour = now.replace(minute=0, second=0, microsecond=0)
    starts = [(hour - timedelta(hours=23 - n)).isoformat().replace("+00:00", "Z") for n in range(24)]
    assert [bucket["start"] for bucket in day["series"]] == starts
    by_start = {bucket["start"]: bucket for bucket in day["series"]}
    assert (by_start[starts[-1]]["cost"], by_start[starts[-1]]["tokens"]) == ("0.10", 7)
    assert (by_start[starts[-1]]["requests"], by_start[starts[-1]]["errors"]) == (2, 1)  # a's call, b's refusal
    assert (by_start[starts[-4]]["cost"], by_start[starts[-4]]["errors"]) == ("0.05", 1)
    assert all(by_start[start]["requests"] == 0 for start in starts[:-4] + starts[-3:-1])
    assert (day["totals"]["cost"], day["totals"]["requests"], day["totals"]["errors"]) == ("0.15", 3, 2)
    assert [row["external_id"] for row in day["top_spenders"]] == ["a", "b"]
    assert (day["models_hours"], day["models_days"]) == (24, None)  # models over the same 24 hours
    assert day["models"] == [{"model": "gpt-4o", "requests": 1, "cost": "0.10", "input_tokens": 3,
                              "output_tokens": 4}]


def test_a_computed_overview_answers_every_poll_of_the_interval(client: TestClient, store: Store,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    seconds = [100.0]
    monkeypatch.setattr(overview_module.RECENT, "clock", lambda: seconds[0])
    store.create(IdentityInput(id="a"))
    store.record("a", cost=Decimal("0.10"))
    first = client.get("/v2/analytics/overview?range=7d", headers=AUTH)
    store.record("a", cost=Decimal("0.20"))
    again = client.get("/v2/analytics/overview?range=7d", headers={**AUTH, "If-None-Match": first.headers["etag"]})
    assert again.status_code == 304  # within the poll interval: the same computation, whoever asks
    seconds[0] += FRESH
    later = client.get("/v2/analytics/overview?range=7d", headers=AUTH).json()
    assert later["totals"]["cost"] == "0.30"


def test_the_overview_lists_budgets_at_risk_fullest_first(client: TestClient, store: Store) -> None:
    # calm's 1 % in a day lasts past any month's end; 50 % in a day would be forecast to run out.
    for name, spent in (("calm", "0.01"), ("warm", "0.80"), ("over", "1.00")):
        store.create(IdentityInput(id=name))
        store.set_budget(name, Budget(period="monthly", amount=Decimal("1")))
        store.record(name, cost=Decimal(spent))
    risky = client.get("/v2/analytics/overview", headers=AUTH).json()["budgets_at_risk"]
    assert [(row["target"], row["state"], row["percent"]) for row in risky] == [
        ("over", "over", 100.0), ("warm", "at_risk", 80.0)]
    assert risky[0]["scope"] == "identity" and risky[0]["amount"] == "1.00" and risky[0]["spent"] == "1.00"


def test_refusals_are_listed_newest_first_and_exported_as_csv(client: TestClient, store: Store) -> None:
    for name in ("first", "second"):
        store.create(IdentityInput(id=name))
        store.set_budget(name, Budget(period="daily", amount=Decimal("0.01")))
        store.record(name, cost=Decimal("0.01"))
        refuse(store, name)
    listed = client.get("/v2/analytics/refusals", headers=AUTH).json()["data"]
    assert [(row["external_id"], row["period"]) for row in listed] == [("second", "daily"), ("first", "daily")]
    overview = client.get("/v2/analytics/overview", headers=AUTH).json()
    assert [row["external_id"] for row in overview["refusals"]] == ["second", "first"]
    exported = client.get("/v2/analytics/refusals/export", headers=AUTH)
    assert exported.headers["content-type"].startswith("text/csv")
    assert "attachment" in exported.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [row["external_id"] for row in rows] == ["second", "first"] and rows[0]["amount_usd"] == "0.01"
    assert client.get("/v2/analytics/refusals?limit=0", headers=AUTH).status_code == 400


def test_identities_export_as_csv_with_their_tightest_budget_and_no_formula(client: TestClient, store: Store) -> None:
    store.create(IdentityInput(id="=HYPERLINK(1)", display_name="Evil"))
    store.create(IdentityInput(id="b", tags=["pro"]))
    store.set_budget("b", Budget(period="daily", amount=Decimal("1")))
    store.set_budget("b", Budget(period="monthly", amount=Decimal("10")))
    store.record("b", cost=Decimal("0.80"))
    rows = {row["_id"]: row for row in csv.DictReader(io.StringIO(
        client.get("/v2/analytics/identities/export", headers=AUTH).text))}
    evil = rows[store.retrieve("=HYPERLINK(1)").id]
    assert evil["external_id"] == "'=HYPERLINK(1)" and evil["tightest_budget"] == ""
    b = rows[store.retrieve("b").id]
    assert (b["cost_30d_usd"], b["tightest_budget"], b["tightest_budget_state"]) == ("0.80", "daily", "at risk")
    only_pro = client.get("/v2/analytics/identities/export?tags=pro", headers=AUTH).text
    assert len(list(csv.DictReader(io.StringIO(only_pro)))) == 1


def test_the_identity_count_follows_search_and_tags(client: TestClient, store: Store) -> None:
    for n in range(5):
        store.create(IdentityInput(id=f"user_{n}", tags=["beta"] if n < 2 else []))
    assert client.get("/v2/analytics/identities/count", headers=AUTH).json() == {"object": "count", "total": 5}
    assert client.get("/v2/analytics/identities/count?tags=beta", headers=AUTH).json()["total"] == 2


def test_a_get_answers_304_while_the_body_has_not_changed(client: TestClient, store: Store) -> None:
    store.create(IdentityInput(id="a"))
    first = client.get("/v2/identities?include_metrics=true", headers=AUTH)
    etag = first.headers["etag"]
    again = client.get("/v2/identities?include_metrics=true", headers={**AUTH, "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    store.record("a", cost=Decimal("0.01"))
    changed = client.get("/v2/identities?include_metrics=true", headers={**AUTH, "If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert client.get("/v2/identities", headers={"If-None-Match": etag}).status_code == 401


def test_budget_blocking_is_1_for_an_identity_refused_because_its_estimate_no_longer_fits(
        client: TestClient, store: Store) -> None:
    store.create(IdentityInput(id="ann"))
    store.set_budget("ann", Budget(period="daily", amount=Decimal("0.10")))
    store.record("ann", cost=Decimal("0.08"))
    refuse(store, "ann", estimate=5 * NANOS // 100)
    values = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value for family in
              text_string_to_metric_families(client.get("/metrics", headers=AUTH).text) for sample in family.samples}
    assert values[("identity_middleware_budget_blocking", (("identity", "ann"), ("period", "daily")))] == 1
    store.reset_budget("ann", "daily")  # the same estimate fits again: no longer blocking
    values = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value for family in
              text_string_to_metric_families(client.get("/metrics", headers=AUTH).text) for sample in family.samples}
    assert values[("identity_middleware_budget_blocking", (("identity", "ann"), ("period", "daily")))] == 0


# -- Django's admin URLconf ------------------------------------------------------------------------
class _URLConf:
    urlpatterns = [path("admin-api/", include("identity_middleware.admin.django"))]


@pytest.fixture
def django_client() -> Iterator[Client]:
    close_stores()
    with override_settings(ROOT_URLCONF=_URLConf, MIDDLEWARE=[], ALLOWED_HOSTS=["testserver"],
                           IDENTITY_MIDDLEWARE={"STORE_URL": "memory://", "ADMIN_TOKEN": "dj",
                                                "METRICS_TOKEN": "scrape"}):
        yield Client()
    close_stores()


def test_django_serves_the_dashboard_and_its_files_with_the_csp(django_client: Client) -> None:
    page = django_client.get("/admin-api/")
    assert page.status_code == 200 and page["content-type"].startswith("text/html")
    assert "default-src 'none'" in page["content-security-policy"] and b'src="static/app.js"' in page.content
    script = django_client.get("/admin-api/static/overview.js")
    assert script.status_code == 200 and script["content-type"].startswith("text/javascript")
    assert django_client.get("/admin-api/static/missing.js").status_code == 404


def test_django_serves_metrics_behind_the_metrics_token(django_client: Client) -> None:
    assert django_client.get("/admin-api/metrics").status_code == 401
    assert django_client.get("/admin-api/metrics", headers={"Authorization": "Bearer dj"}).status_code == 401
    reply = django_client.get("/admin-api/metrics", headers={"Authorization": "Bearer scrape"})
    assert reply.status_code == 200 and b"identity_middleware_identities 0.0" in reply.content


def test_django_answers_conditional_gets_and_the_overview(django_client: Client) -> None:
    auth = {"Authorization": "Bearer dj"}
    first = django_client.get("/admin-api/v2/analytics/overview?range=30d", headers=auth)
    assert first.status_code == 200 and first.json()["range"] == "30d"
    again = django_client.get("/admin-api/v2/analytics/overview?range=30d",
                              headers={**auth, "If-None-Match": first["etag"]})
    assert again.status_code == 304


def test_an_unknown_or_empty_range_is_a_400_naming_the_field(client: TestClient) -> None:
    for value in ("", "1y"):
        reply = client.get(f"/v2/analytics/overview?range={value}", headers=AUTH)
        assert reply.status_code == 400 and reply.json()["error"]["field"] == "range"
