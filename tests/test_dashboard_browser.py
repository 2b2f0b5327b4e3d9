"""The Identity Analytics console, driven in headless Chromium (Debian's, through Playwright) against a real
Starlette app with IdentityMiddleware and the admin app over one store (memory, and Redis where it matters)."""

from __future__ import annotations

import contextlib
import csv
import io
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import playwright.sync_api as playwright_api
import pytest

from browser import CHROMIUM, CHROMIUM_ARGS, demo_app, live_server
from identity_middleware import Budget, IdentityInput
from identity_middleware.core.budgets import BudgetSpec
from identity_middleware.stores import Store

if not Path(CHROMIUM).exists():  # .ci/run installs it; a missing browser is a failure, not a skip
    pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install -y chromium", pytrace=False)

Page = Any  # playwright.sync_api.Page
expect = playwright_api.expect
TOKEN = "browser-test-token"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(params=["memory"])
def store(request: pytest.FixtureRequest, make_store: Any) -> Store:
    """A MemoryStore; tests that must hold on both stores take ``both_stores``."""
    return make_store(request.param)  # type: ignore[no-any-return]


@pytest.fixture(params=["memory", "redis"])
def both_stores(request: pytest.FixtureRequest, make_store: Any) -> Store:
    return make_store(request.param)  # type: ignore[no-any-return]


@pytest.fixture
def base(store: Store) -> Iterator[str]:
    with live_server(demo_app(store, TOKEN)) as url:
        yield url


@pytest.fixture
def base_on_both(both_stores: Store) -> Iterator[str]:
    with live_server(demo_app(both_stores, TOKEN)) as url:
        yield url


@contextlib.contextmanager
def open_page(browser: Any, url: str, **context: Any) -> Iterator[Page]:
    context_ = browser.new_context(**context)
    page = context_.new_page()
    problems: list[str] = []
    # Chromium logs every 4xx reply as a console error; the tests provoke some on purpose.
    page.on("console", lambda message: message.type == "error" and not message.text.startswith(
        "Failed to load resource") and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(url)
    yield page
    context_.close()
    assert problems == []  # no script error, no CSP violation


@pytest.fixture
def page(browser: Any, base: str) -> Iterator[Page]:
    with open_page(browser, f"{base}/admin/") as opened:
        yield opened


@pytest.fixture
def page_on_both(browser: Any, base_on_both: str) -> Iterator[Page]:
    with open_page(browser, f"{base_on_both}/admin/") as opened:
        yield opened


def chat(base: str, identity: str, **body: Any) -> int:
    return httpx.post(f"{base}/chat", headers={"X-Identity-Id": identity}, json=body).status_code


def sign_in(page: Page, token: str = TOKEN) -> None:
    page.get_by_label("Admin token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def go(page: Page, name: str) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name=name).click()
    expect(page.get_by_role("heading", level=1, name=name)).to_be_visible()


def row_of(page: Page, external_id: str) -> Any:
    return page.get_by_role("row").filter(has=page.get_by_role("link", name=external_id, exact=True))


def dialog(page: Page) -> Any:
    """The open dialog (the forms share field names: each is driven inside its own)."""
    return page.get_by_role("dialog")


def confirm(page: Page, action: str) -> None:
    page.get_by_role("dialog").get_by_role("button", name=action, exact=True).click()
    expect(page.get_by_role("dialog")).to_be_hidden()


# -- signing in -----------------------------------------------------------------------------------
def test_a_wrong_token_is_told_plainly(page: Page) -> None:
    sign_in(page, "not-the-token")
    expect(page.get_by_role("alert")).to_have_text(re.compile("Wrong token"))
    expect(page.get_by_role("navigation", name="Main")).to_be_hidden()


def test_the_token_stays_in_the_tab_not_in_a_url_or_cookie(page: Page) -> None:
    sign_in(page)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    assert TOKEN not in page.url and page.context.cookies() == []
    assert page.evaluate("Object.values(sessionStorage)") == [TOKEN]
    page.reload()  # the same tab stays signed in
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Admin token")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


# -- the Overview ---------------------------------------------------------------------------------
def test_the_overview_shows_the_workspace_its_top_spenders_budgets_at_risk_and_refusals(
        page_on_both: Page, base_on_both: str, both_stores: Store) -> None:
    page, base, store = page_on_both, base_on_both, both_stores
    chat(base, "small", cost="0.01", model="gpt-4o")
    chat(base, "big", cost="0.50", input_tokens=100, output_tokens=20, model="gpt-4o")
    chat(base, "big", fail=True)
    store.set_budget("big", Budget(period="daily", amount=Decimal("0.50")))
    assert chat(base, "big", cost="0.01") == 429  # refused: logged by the store
    sign_in(page)
    expect(page.get_by_role("heading", level=1, name="Overview")).to_be_visible()
    assert page.get_by_label("Range").locator("option").all_text_contents() == ["24 hours", "7 days", "30 days"]
    expect(page.locator("#overview-totals")).to_contain_text("$0.51")
    top = page.get_by_role("region", name="Top spenders")
    expect(top.get_by_role("link")).to_have_text(["big", "small"])  # ranked by the server
    expect(page.get_by_role("region", name="Budgets at risk")).to_contain_text(re.compile(r"big.*100% · over"))
    refusals = page.get_by_role("region", name="Recent refusals")
    expect(refusals.get_by_role("link", name="big")).to_be_visible()
    expect(refusals).to_contain_text("Daily identity budget")
    page.get_by_label("Range").select_option(label="24 hours")
    day = page.get_by_role("img", name=re.compile(r"Spend per hour over the last 24 hours, \$0\.51"))  # both stores
    expect(day).to_be_visible()
    page.get_by_label("Range").select_option(label="30 days")
    expect(page.get_by_role("img", name=re.compile(r"Spend per day over the last 30 days"))).to_be_visible()


def test_refusals_and_identities_export_as_csv(page: Page, base: str, store: Store) -> None:
    store.create(IdentityInput(id="ann", display_name="Ann"))
    store.set_budget("ann", Budget(period="daily", amount=Decimal("0.01")))
    chat(base, "ann", cost="0.02")
    assert chat(base, "ann") == 429
    sign_in(page)
    with page.expect_download() as refusals:
        page.get_by_role("button", name="Export refusals as CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(refusals.value.path()).read_text())))
    assert refusals.value.suggested_filename == "refusals.csv" and rows[0]["external_id"] == "ann"
    go(page, "Identities")
    with page.expect_download() as identities:
        page.get_by_role("button", name="Export as CSV").click()
    [row] = list(csv.DictReader(io.StringIO(Path(identities.value.path()).read_text())))
    assert (row["external_id"], row["cost_30d_usd"], row["tightest_budget_state"]) == ("ann", "0.02", "over")


# -- live -----------------------------------------------------------------------------------------
def test_what_is_on_screen_refreshes_itself_and_pauses(browser: Any, base_on_both: str, both_stores: Store) -> None:
    base, store = base_on_both, both_stores
    store.create(IdentityInput(id="jane"))
    store.set_budget("jane", Budget(period="daily", amount=Decimal("0.20")))
    with open_page(browser, f"{base}/admin/?refresh=1") as page:
        requests: list[str] = []
        page.on("request", lambda request: "v2/" in request.url and requests.append(request.url))
        page.clock.install()
        sign_in(page)
        page.get_by_role("link", name="Identities").click()
        page.get_by_role("link", name="jane", exact=True).click()
        ring = page.get_by_role("progressbar", name=re.compile("Daily"))
        expect(ring).to_have_attribute("aria-valuenow", "0")
        for expected in ("20", "40"):  # each call shows up without a reload
            chat(base, "jane", cost="0.04")
            page.clock.run_for(1500)
            expect(ring).to_have_attribute("aria-valuenow", expected)
        expect(page.get_by_text(re.compile(r"^Updated "))).to_be_visible()
        page.get_by_role("button", name="Pause updates").click()
        expect(page.get_by_role("button", name="Pause updates")).to_have_attribute("aria-pressed", "true")
        chat(base, "jane", cost="0.04")
        asked = len(requests)
        page.clock.run_for(10_000)  # ten intervals: no request while paused
        assert len(requests) == asked
        expect(ring).to_have_attribute("aria-valuenow", "40")
        page.get_by_role("button", name="Pause updates").click()
        expect(ring).to_have_attribute("aria-valuenow", "60")


def test_polling_asks_conditionally_and_an_unchanged_view_gets_304s(browser: Any, base: str, store: Store) -> None:
    store.create(IdentityInput(id="a"))
    with open_page(browser, f"{base}/admin/?refresh=1") as page:
        statuses: list[int] = []
        page.on("response", lambda response: "v2/analytics/overview" in response.url
                and statuses.append(response.status))
        page.clock.install()
        sign_in(page)
        expect(page.get_by_text(re.compile(r"^Updated "))).to_be_visible()  # the first answer is on screen
        with page.expect_response(lambda response: "v2/analytics/overview" in response.url):
            page.clock.run_for(1500)  # the next poll
        assert statuses[0] == 200 and statuses[-1] == 304



def test_budgets_forecast_to_run_out_on_the_overview_the_budgets_page_and_the_identity_page(
        page_on_both: Page, base_on_both: str, both_stores: Store) -> None:
    page, base, store = page_on_both, base_on_both, both_stores
    store.create_budget(BudgetSpec(scope="identity", target="eve", period="one_time", amount=Decimal("10")))
    store.set_budget("eve", Budget(period="daily", amount=Decimal("1")))
    assert chat(base, "eve", cost="1") == 200  # the daily budget spent; $9 of the balance left at ~$1 a day
    sign_in(page)
    risks = page.get_by_role("region", name="Budgets at risk")
    expect(risks).to_contain_text(re.compile(r"eve.*One time.*10% · forecast to run out"))
    expect(risks).to_contain_text(re.compile(r"eve.*Daily.*100% · over"))
    go(page, "Budgets")
    expect(page.get_by_role("row", name=re.compile(r"^eve.*One time"))).to_contain_text(
        re.compile(r"Forecast to run out .* at \$\d+\.\d\d a day"))  # a rate, in cents
    expect(page.get_by_role("row", name=re.compile(r"^eve.*Daily"))).not_to_contain_text("Forecast")  # spent
    go(page, "Identities")
    page.get_by_role("link", name="eve", exact=True).click()
    # (A forecast shown here is forecastText's, as on the Budgets page: a spent budget shows none.)
    daily = page.get_by_role("article").filter(has_text="Daily budget")
    expect(daily).to_contain_text("100%")
    expect(daily).not_to_contain_text("Forecast")  # spent: nothing left to run out



def test_a_balance_is_topped_up_from_the_budgets_page_once(page_on_both: Page, both_stores: Store) -> None:
    page, store = page_on_both, both_stores
    balance = store.create_budget(BudgetSpec(scope="identity", target="eve", period="one_time", amount=Decimal("5")))
    store.create_budget(BudgetSpec(scope="identity", target="eve", period="daily", amount=Decimal("1")))
    sign_in(page)
    go(page, "Budgets")
    expect(page.get_by_role("button", name="Top up daily identity budget for eve")).to_have_count(0)
    page.get_by_role("button", name="Top up one time identity budget for eve").click()
    dialog(page).get_by_label("Amount").fill("0")
    dialog(page).get_by_role("button", name="Top up").click()
    expect(dialog(page).get_by_label("Amount")).to_have_accessible_description(re.compile("greater than 0"))
    dialog(page).get_by_label("Amount").fill("20.000000001")
    dialog(page).get_by_role("button", name="Top up").click()
    expect(page.get_by_text("The balance of eve was topped up by $20.000000001: its limit is now $25.000000001."))\
        .to_be_visible()
    (top_up,) = store.top_ups(balance.id)
    assert top_up.amount == Decimal("20.000000001") and top_up.idempotency_key.startswith("dashboard-")
    assert store.retrieve_budget(balance.id).amount == Decimal("25.000000001")


# -- identities -----------------------------------------------------------------------------------
def test_an_identity_that_traffic_created_is_listed_with_its_numbers(page: Page, base: str, store: Store) -> None:
    assert chat(base, "user_42", cost="0.05", input_tokens=100, output_tokens=20) == 200
    assert chat(base, "user_42", cost="0.0500001", input_tokens=1000, output_tokens=200) == 200
    assert chat(base, "user_42", fail=True) == 500
    store.set_budget("user_42", Budget(period="monthly", amount=Decimal("0.125")))
    sign_in(page)
    go(page, "Identities")
    for name in ("Identity", "Source", "Requests", "Cost", "Tokens", "Error rate", "Budget"):
        expect(page.get_by_role("columnheader", name=name)).to_be_visible()
    cells = row_of(page, "user_42").get_by_role("cell")
    expect(cells).to_have_text([re.compile("user_42$"), "Header", "3", "$0.1000001", "1,320", "33.3%",
                                "Monthly 80% · at risk"])
    expect(page.get_by_text("1 identity in all")).to_be_visible()


def test_search_tags_sorting_pages_and_the_total(page: Page, store: Store) -> None:
    for n in range(30):
        store.create(IdentityInput(id=f"user_{n:02}", tags=["beta"] if n % 10 == 0 else []))
        store.record(f"user_{n:02}", cost=Decimal(n) / 100)
    sign_in(page)
    go(page, "Identities")
    links = page.locator("#identities tbody a")
    expect(links).to_have_count(25)
    expect(page.get_by_text("30 identities in all")).to_be_visible()
    page.get_by_role("button", name="Next").click()
    expect(links).to_have_text([f"user_{n}" for n in range(25, 30)])
    expect(page.get_by_role("button", name="Next")).to_be_disabled()
    page.get_by_role("button", name="Previous").click()
    expect(links).to_have_count(25)
    expect(page.get_by_role("button", name="Previous")).to_be_disabled()
    page.get_by_role("button", name="Cost").click()  # most expensive first
    expect(page.get_by_role("columnheader", name="Cost")).to_have_attribute("aria-sort", "descending")
    expect(links.first).to_have_text("user_24")
    page.get_by_label("Tag", exact=True).fill("beta")
    page.get_by_role("button", name="Filter").click()
    expect(links).to_have_count(3)
    expect(page.get_by_text("3 identities match")).to_be_visible()
    page.get_by_label("Search").fill("user_2")
    page.get_by_role("button", name="Filter").click()
    expect(links).to_have_text(["user_20"])


def test_create_an_identity_with_a_budget_and_find_it_in_the_store(page: Page, store: Store) -> None:
    sign_in(page)
    go(page, "Identities")
    page.get_by_role("button", name="Create an identity").click()
    dialog(page).get_by_label("External ID").fill("client-a")
    dialog(page).get_by_label("Display name").fill("Client A")
    dialog(page).get_by_label("Email").fill("a@example.com")
    dialog(page).get_by_label("Budget", exact=True).check()
    dialog(page).get_by_label("Period").select_option("monthly")
    dialog(page).get_by_label("Amount").fill("10")
    page.get_by_role("button", name="Create", exact=True).click()
    expect(page.get_by_role("heading", name="Client A")).to_be_visible()
    expect(page.get_by_role("progressbar", name=re.compile("Monthly"))).to_have_attribute("aria-valuenow", "0")
    made = store.retrieve("client-a")
    assert (made.display_name, made.email) == ("Client A", "a@example.com")
    [budget] = store.budget_status("client-a")
    assert budget.period == "monthly" and budget.amount == Decimal("10")


def test_create_shows_validation_errors_beside_the_field(page: Page, store: Store) -> None:
    store.create(IdentityInput(id="taken"))
    sign_in(page)
    go(page, "Identities")
    page.get_by_role("button", name="Create an identity").click()
    page.get_by_role("button", name="Create", exact=True).click()
    expect(dialog(page).get_by_label("External ID")).to_have_accessible_description("External ID is required.")
    dialog(page).get_by_label("External ID").fill("someone")
    dialog(page).get_by_label("Email").fill("not-an-email")
    page.get_by_role("button", name="Create", exact=True).click()
    expect(dialog(page).get_by_label("Email")).to_have_attribute("aria-invalid", "true")
    expect(dialog(page).get_by_label("Email")).to_have_accessible_description(re.compile("email", re.IGNORECASE))
    dialog(page).get_by_label("Email").fill("")
    dialog(page).get_by_label("Budget", exact=True).check()
    dialog(page).get_by_label("Amount").fill("-1")
    page.get_by_role("button", name="Create", exact=True).click()
    expect(dialog(page).get_by_label("Amount")).to_have_accessible_description(re.compile("greater than 0"))
    dialog(page).get_by_label("Budget", exact=True).uncheck()
    dialog(page).get_by_label("External ID").fill("taken")
    page.get_by_role("button", name="Create", exact=True).click()
    expect(dialog(page).get_by_label("External ID")).to_have_accessible_description(re.compile("already exists"))
    with pytest.raises(LookupError):
        store.retrieve("someone")


def test_an_identity_is_edited_and_deleted_after_a_confirmation(page: Page, store: Store) -> None:
    store.create(IdentityInput(id="bob", display_name="Bob"))
    sign_in(page)
    go(page, "Identities")
    page.get_by_role("link", name="bob", exact=True).click()
    page.get_by_role("button", name="Edit").click()
    dialog(page).get_by_label("Display name").fill("Robert")
    dialog(page).get_by_label("Tags").fill("pro, beta")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("heading", level=1, name="Robert")).to_be_visible()
    assert (store.retrieve("bob").display_name, store.retrieve("bob").tags) == ("Robert", ["pro", "beta"])
    page.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    assert store.retrieve("bob")
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("dialog")).to_contain_text("Delete bob?")
    confirm(page, "Delete identity")
    expect(page.get_by_role("heading", level=1, name="Identities")).to_be_visible()
    with pytest.raises(LookupError):
        store.retrieve("bob")


def test_reset_asks_first_then_takes_the_ring_to_zero(page: Page, base: str, store: Store) -> None:
    chat(base, "jane")
    store.set_budget("jane", Budget(period="daily", amount=Decimal("0.20")))
    chat(base, "jane", cost="0.08")
    sign_in(page)
    go(page, "Identities")
    page.get_by_role("link", name="jane", exact=True).click()
    ring = page.get_by_role("progressbar", name=re.compile("Daily"))
    expect(ring).to_have_attribute("aria-valuenow", "40")
    expect(ring).to_have_attribute("aria-valuetext", "0.08 of 0.20 consumed, 40%")
    expect(page.get_by_text(re.compile("resets at"))).to_be_visible()
    page.get_by_role("button", name="Reset").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    assert store.budget_status("jane")[0].spent == Decimal("0.08")  # nothing without the confirmation
    page.get_by_role("button", name="Reset").click()
    confirm(page, "Reset")
    expect(ring).to_have_attribute("aria-valuenow", "0")
    expect(ring).to_have_attribute("aria-valuetext", "0.00 of 0.20 consumed, 0%")
    assert store.budget_status("jane")[0].spent == 0


def test_the_identity_page_shows_the_daily_spend_chart(page: Page, base: str) -> None:
    chat(base, "ann", cost="0.25")
    sign_in(page)
    go(page, "Identities")
    page.get_by_role("link", name="ann", exact=True).click()
    chart = page.get_by_role("img", name=re.compile(r"Daily spend over the last 30 days, \$0\.25 in all"))
    expect(chart).to_be_visible()
    expect(page.get_by_role("heading", name="Models", exact=True)).to_be_hidden()  # no model reported


# -- budgets --------------------------------------------------------------------------------------
def test_every_budget_action_from_the_budgets_page(page_on_both: Page, both_stores: Store) -> None:
    page, store = page_on_both, both_stores
    store.create(IdentityInput(id="jane"))
    store.create_budget(BudgetSpec(scope="workspace", period="monthly", amount=Decimal("100")))
    sign_in(page)
    go(page, "Budgets")
    expect(page.get_by_role("row", name=re.compile("Workspace"))).to_be_visible()
    page.get_by_role("button", name="New budget").click()
    scope = dialog(page).get_by_label("Scope")
    assert scope.locator("option").all_text_contents() == ["Identity", "Model", "Provider", "Workspace", "Team",
                                                           "Project", "API key", "Match (CEL)"]
    expect(scope.locator("option", has_text="Team")).to_be_enabled()
    expect(scope).to_have_accessible_description(re.compile("metadata.team is the target"))
    assert dialog(page).get_by_label("Period").locator("option").all_text_contents() == [
        "Daily", "Weekly", "Monthly", "Yearly", "One time"]
    scope.select_option(label="Identity")
    dialog(page).get_by_label("Target").fill("jane")
    dialog(page).get_by_label("Period").select_option(label="Daily")
    dialog(page).get_by_label("Amount").fill("0.50")
    page.get_by_role("button", name="Create", exact=True).click()
    row = page.get_by_role("row", name=re.compile(r"^jane"))
    expect(row).to_contain_text("Daily")
    [status] = store.budget_status("jane")
    assert (status.period, status.amount) == ("daily", Decimal("0.5"))

    page.get_by_role("button", name="New budget").click()
    dialog(page).get_by_label("Scope").select_option(label="Model")
    dialog(page).get_by_label("Target").fill("gpt-4o")
    dialog(page).get_by_label("Amount").fill("20")
    page.get_by_role("button", name="Create", exact=True).click()
    expect(page.get_by_role("row", name=re.compile("gpt-4o"))).to_contain_text("Monthly")

    page.get_by_role("button", name="New budget").click()
    dialog(page).get_by_label("Scope").select_option(label="Team")
    dialog(page).get_by_label("Target").fill("ml")
    dialog(page).get_by_label("Amount").fill("40")
    page.get_by_role("button", name="Create", exact=True).click()
    team = page.get_by_role("row", name=re.compile(r"^ml"))
    expect(team).to_contain_text("Team")
    [created] = [budget for budget, _ in store.list_budgets(limit=10).data if budget.scope.value == "match"]
    assert created.match == 'metadata.team == "ml"' and created.amount == Decimal("40")

    page.get_by_role("button", name="New budget").click()
    dialog(page).get_by_label("Scope").select_option(label="Match (CEL)")
    dialog(page).get_by_label("Target").fill("metadata.team ==")
    dialog(page).get_by_label("Amount").fill("5")
    page.get_by_role("button", name="Create", exact=True).click()
    expect(dialog(page).get_by_label("Target")).to_have_attribute("aria-invalid", "true")
    expect(dialog(page)).to_contain_text("does not parse")
    dialog(page).get_by_label("Target").fill('project == "apollo"')
    page.get_by_role("button", name="Create", exact=True).click()
    match_row = page.get_by_role("row", name=re.compile(r'^project == "apollo"'))
    expect(match_row).to_contain_text("Match")
    match_row.get_by_role("button", name="Edit").click()  # a match budget's expression may change
    expect(dialog(page).get_by_label("Target")).to_be_enabled()
    dialog(page).get_by_label("Target").fill('project == "gemini"')
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("row", name=re.compile(r'^project == "gemini"'))).to_contain_text("$5.00")
    assert {budget.match for budget, _ in store.list_budgets(limit=10).data} >= {'project == "gemini"'}

    page.get_by_role("button", name="New budget").click()
    dialog(page).get_by_label("Scope").select_option(label="API key")
    dialog(page).get_by_label("Target").fill("key_7")
    dialog(page).get_by_label("Amount").fill("3")
    page.get_by_role("button", name="Create", exact=True).click()
    expect(page.get_by_role("row", name=re.compile(r"^key_7"))).to_contain_text("API key")

    row.get_by_role("button", name="Edit").click()
    expect(dialog(page).get_by_label("Target")).to_be_disabled()
    dialog(page).get_by_label("Amount").fill("0.75")
    page.get_by_role("button", name="Save").click()
    expect(row).to_contain_text("$0.75")
    assert store.budget_status("jane")[0].amount == Decimal("0.75")

    row.get_by_role("button", name="Deactivate").click()
    expect(row.get_by_role("button", name="Activate")).to_be_visible()
    budget_id = next(budget.id for budget, _ in store.list_budgets(limit=10).data if budget.target == "jane")
    assert store.retrieve_budget(budget_id).is_active is False
    row.get_by_role("button", name="Activate").click()
    expect(row.get_by_role("button", name="Deactivate")).to_be_visible()

    store.record("jane", cost=Decimal("0.30"))
    row.get_by_role("button", name="Reset").click()
    expect(page.get_by_role("dialog")).to_contain_text("Reset the budget for jane?")
    confirm(page, "Reset")
    expect(page.get_by_role("status")).to_contain_text("was reset")
    assert store.budget_usage(budget_id).amount == 0

    row.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    expect(row).to_be_visible()
    row.get_by_role("button", name="Delete").click()
    confirm(page, "Delete")
    expect(page.get_by_role("row", name=re.compile(r"^jane"))).to_have_count(0)
    assert store.budget_status("jane") == []


# -- usable everywhere ----------------------------------------------------------------------------
def narrow_fits(page: Page) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= 390


def test_at_390_px_the_cost_column_and_the_model_table_fit(browser: Any, base: str, store: Store) -> None:
    chat(base, "someone-with-a-long-external-id@example.com", cost="0.123456", model="a-model-with-a-long-name-2025")
    with open_page(browser, f"{base}/admin/", viewport={"width": 390, "height": 844}) as page:
        sign_in(page)
        expect(page.get_by_role("region", name="Top spenders").get_by_role("link")).to_have_count(1)
        narrow_fits(page)
        go(page, "Identities")
        cost = page.get_by_role("cell", name="$0.123456")
        expect(cost).to_be_in_viewport(ratio=1)
        narrow_fits(page)
        page.get_by_role("link", name=re.compile("someone-with")).click()
        models = page.locator("#model-table")
        expect(models).to_be_visible()
        panel = page.locator("#models").bounding_box()
        table = models.bounding_box()
        assert table["x"] + table["width"] <= panel["x"] + panel["width"] + 0.5
        narrow_fits(page)
        go(page, "Budgets")
        narrow_fits(page)


def test_the_pages_follow_the_systems_dark_preference(browser: Any, base: str) -> None:
    with open_page(browser, f"{base}/admin/", color_scheme="dark") as page:
        sign_in(page)
        expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        background = page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
        red, green, blue = (int(part) for part in re.findall(r"\d+", background)[:3])
        assert max(red, green, blue) < 60  # a dark page
    with open_page(browser, f"{base}/admin/", color_scheme="light") as page:
        background = page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
        assert min(int(part) for part in re.findall(r"\d+", background)[:3]) > 200


def test_keyboard_only_from_sign_in_to_a_new_budget(page: Page, store: Store) -> None:
    page.get_by_label("Admin token").focus()
    page.keyboard.type(TOKEN)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    budgets_link = page.get_by_role("navigation", name="Main").get_by_role("link", name="Budgets")
    for _ in range(10):  # Tab through the top bar until the Budgets link has the focus
        page.keyboard.press("Tab")
        if budgets_link.evaluate("node => node === document.activeElement"):
            break
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1, name="Budgets")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="New budget")).to_be_focused()
    page.keyboard.press("Enter")
    expect(dialog(page).get_by_label("Scope")).to_be_focused()
    for _ in range(3):  # Identity -> Model -> Provider -> Workspace
        page.keyboard.press("ArrowDown")
    expect(dialog(page).get_by_label("Scope")).to_have_value("workspace")
    expect(dialog(page).get_by_label("Target")).to_be_disabled()
    page.keyboard.press("Tab")  # the disabled Target is skipped: Period
    expect(dialog(page).get_by_label("Period")).to_be_focused()
    page.keyboard.press("Tab")
    expect(dialog(page).get_by_label("Amount")).to_be_focused()
    page.keyboard.type("42")
    page.keyboard.press("Enter")
    expect(page.get_by_role("row", name=re.compile("Workspace"))).to_be_visible()
    assert [budget.amount for budget, _ in store.list_budgets().data] == [Decimal("42")]


def test_no_serious_or_critical_accessibility_violation_on_any_page(browser: Any, base: str, store: Store) -> None:
    from axe_playwright_python.sync_playwright import Axe

    axe = Axe()
    chat(base, "ann", cost="0.30", model="gpt-4o")
    store.set_budget("ann", Budget(period="daily", amount=Decimal("0.20")))
    chat(base, "ann", cost="0.01")
    store.create_budget(BudgetSpec(scope="model", target="gpt-4o", period="monthly", amount=Decimal("10")))

    def check(page: Page, where: str) -> None:
        results = axe.run(page)
        bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in results.response["violations"]
               if v["impact"] in ("serious", "critical")]
        assert bad == [], where

    for scheme, width in (("light", 1280), ("dark", 1280), ("light", 390)):
        with open_page(browser, f"{base}/admin/", color_scheme=scheme,
                       viewport={"width": width, "height": 800}) as page:
            check(page, f"sign in ({scheme}, {width})")
            sign_in(page)
            expect(page.get_by_role("region", name="Recent refusals").get_by_role("link")).to_have_count(1)
            check(page, f"overview ({scheme}, {width})")
            go(page, "Identities")
            expect(page.get_by_role("link", name="ann", exact=True)).to_be_visible()
            check(page, f"identities ({scheme}, {width})")
            page.get_by_role("link", name="ann", exact=True).click()
            expect(page.get_by_role("progressbar")).to_be_visible()
            check(page, f"identity ({scheme}, {width})")
            go(page, "Budgets")
            expect(page.get_by_role("row", name=re.compile("gpt-4o"))).to_be_visible()
            check(page, f"budgets ({scheme}, {width})")
            page.get_by_role("button", name="New budget").click()
            check(page, f"new budget form ({scheme}, {width})")


# -- Django ---------------------------------------------------------------------------------------
class _DjangoURLConf:
    urlpatterns: list[Any] = []


def test_the_console_works_where_django_serves_it(browser: Any) -> None:
    import django
    from django.apps import apps
    from django.conf import settings
    from django.core.handlers.asgi import ASGIHandler
    from django.test import override_settings
    from django.urls import include, path

    from identity_middleware.admin.django import close_stores

    if not settings.configured:
        settings.configure(SECRET_KEY="console-tests", INSTALLED_APPS=[], MIDDLEWARE=[], DATABASES={}, USE_TZ=True)
    if not apps.ready:
        django.setup()
    _DjangoURLConf.urlpatterns = [path("admin-api/", include("identity_middleware.admin.django"))]
    close_stores()
    config = {"STORE_URL": "memory://", "ADMIN_TOKEN": TOKEN}
    settings_ = override_settings(ROOT_URLCONF=_DjangoURLConf, MIDDLEWARE=[], ALLOWED_HOSTS=["127.0.0.1"],
                                  IDENTITY_MIDDLEWARE=config)
    with settings_, live_server(ASGIHandler()) as url, open_page(browser, f"{url}/admin-api/") as page:
        sign_in(page)
        expect(page.get_by_role("heading", level=1, name="Overview")).to_be_visible()
        expect(page.get_by_text(re.compile(r"^Updated "))).to_be_visible()
        go(page, "Budgets")
        page.get_by_role("button", name="New budget").click()
        dialog(page).get_by_label("Scope").select_option(label="Workspace")
        dialog(page).get_by_label("Amount").fill("5")
        page.get_by_role("button", name="Create", exact=True).click()
        expect(page.get_by_role("row", name=re.compile("Workspace"))).to_contain_text("$5.00")
    close_stores()
