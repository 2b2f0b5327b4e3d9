"""The Identity Analytics dashboard, driven in headless Chromium (Debian's, through Playwright) against a
real Starlette app with IdentityMiddleware and the admin app over one store."""

from __future__ import annotations

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
from identity_middleware.stores import MemoryStore

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


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def base(store: MemoryStore) -> Iterator[str]:
    with live_server(demo_app(store, TOKEN)) as url:
        yield url


@pytest.fixture
def page(browser: Any, base: str) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    problems: list[str] = []
    # Chromium logs every 4xx reply as a console error; the tests provoke some on purpose.
    page.on("console", lambda message: message.type == "error" and not message.text.startswith(
        "Failed to load resource") and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(f"{base}/admin/")
    yield page
    context.close()
    assert problems == []  # no script error, no CSP violation


def chat(base: str, identity: str, **body: Any) -> int:
    return httpx.post(f"{base}/chat", headers={"X-Identity-Id": identity}, json=body).status_code


def sign_in(page: Page, token: str = TOKEN) -> None:
    page.get_by_label("Admin token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def row_of(page: Page, external_id: str) -> Any:
    return page.get_by_role("row").filter(has=page.get_by_role("link", name=external_id, exact=True))


def test_a_wrong_token_is_told_plainly(page: Page) -> None:
    sign_in(page, "not-the-token")
    expect(page.get_by_role("alert")).to_have_text(re.compile("Wrong token"))
    expect(page.get_by_role("table")).to_be_hidden()


def test_the_token_stays_in_the_tab_not_in_a_url_or_cookie(page: Page) -> None:
    sign_in(page)
    expect(page.get_by_role("columnheader", name="Identity")).to_be_visible()
    assert TOKEN not in page.url and page.context.cookies() == []
    assert page.evaluate("Object.values(sessionStorage)") == [TOKEN]
    page.reload()  # the same tab stays signed in
    expect(page.get_by_role("columnheader", name="Identity")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Admin token")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


def test_an_identity_that_traffic_created_is_listed_with_its_numbers(page: Page, base: str) -> None:
    assert chat(base, "user_42", cost="0.05", input_tokens=100, output_tokens=20) == 200
    assert chat(base, "user_42", cost="0.0500001", input_tokens=1000, output_tokens=200) == 200
    assert chat(base, "user_42", fail=True) == 500
    sign_in(page)
    for name in ("Identity", "Source", "Requests", "Cost", "Tokens", "Error rate"):
        expect(page.get_by_role("columnheader", name=name)).to_be_visible()
    cells = row_of(page, "user_42").get_by_role("cell")
    expect(cells).to_have_text([re.compile("user_42$"), "Header", "3", "$0.1000001", "1,320", "33.3%"])


def test_reset_takes_the_ring_to_zero(page: Page, base: str, store: MemoryStore) -> None:
    chat(base, "jane")
    store.set_budget("jane", Budget(period="daily", amount=Decimal("0.20")))
    chat(base, "jane", cost="0.08")
    sign_in(page)
    page.get_by_role("link", name="jane", exact=True).click()
    ring = page.get_by_role("progressbar", name=re.compile("Daily"))
    expect(ring).to_have_attribute("aria-valuenow", "40")
    expect(ring).to_have_attribute("aria-valuetext", "0.08 of 0.20 consumed, 40%")
    expect(page.get_by_text("0.08 of 0.20 consumed, 40%")).to_be_visible()
    expect(page.get_by_text(re.compile("resets at"))).to_be_visible()
    page.get_by_role("button", name="Reset").click()
    expect(ring).to_have_attribute("aria-valuenow", "0")
    expect(ring).to_have_attribute("aria-valuetext", "0.00 of 0.20 consumed, 0%")
    assert store.budget_status("jane")[0].spent == 0


def test_the_identity_page_shows_the_daily_spend_chart(page: Page, base: str) -> None:
    chat(base, "ann", cost="0.25")
    sign_in(page)
    page.get_by_role("link", name="ann", exact=True).click()
    chart = page.get_by_role("img", name=re.compile(r"Daily spend over the last 30 days, \$0\.25 in all"))
    expect(chart).to_be_visible()
    expect(page.get_by_role("heading", name="Models")).to_be_hidden()  # no per-model data in the reply yet


def test_create_an_identity_with_a_budget_and_find_it_in_the_store(page: Page, store: MemoryStore) -> None:
    sign_in(page)
    page.get_by_role("button", name="Create an identity").click()
    page.get_by_label("External ID").fill("client-a")
    page.get_by_label("Display name").fill("Client A")
    page.get_by_label("Email").fill("a@example.com")
    page.get_by_label("Budget", exact=True).check()
    page.get_by_label("Period").select_option("monthly")
    page.get_by_label("Amount").fill("10")
    page.get_by_role("button", name="Create", exact=True).click()
    expect(page.get_by_role("heading", name="Client A")).to_be_visible()
    expect(page.get_by_role("progressbar", name=re.compile("Monthly"))).to_have_attribute("aria-valuenow", "0")
    made = store.retrieve("client-a")
    assert (made.display_name, made.email) == ("Client A", "a@example.com")
    [budget] = store.budget_status("client-a")
    assert budget.period == "monthly" and budget.amount == Decimal("10")


def test_create_shows_validation_errors_beside_the_field(page: Page, store: MemoryStore) -> None:
    store.create(IdentityInput(id="taken"))
    sign_in(page)
    page.get_by_role("button", name="Create an identity").click()
    page.get_by_role("button", name="Create", exact=True).click()
    expect(page.get_by_label("External ID")).to_have_accessible_description("External ID is required.")
    page.get_by_label("External ID").fill("someone")
    page.get_by_label("Email").fill("not-an-email")
    page.get_by_role("button", name="Create", exact=True).click()
    expect(page.get_by_label("Email")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Email")).to_have_accessible_description(re.compile("email", re.IGNORECASE))
    page.get_by_label("Email").fill("")
    page.get_by_label("Budget", exact=True).check()
    page.get_by_label("Amount").fill("-1")
    page.get_by_role("button", name="Create", exact=True).click()
    expect(page.get_by_label("Amount")).to_have_accessible_description(re.compile("greater than 0"))
    page.get_by_label("Budget", exact=True).uncheck()
    page.get_by_label("External ID").fill("taken")
    page.get_by_role("button", name="Create", exact=True).click()
    expect(page.get_by_label("External ID")).to_have_accessible_description(re.compile("already exists"))
    with pytest.raises(LookupError):
        store.retrieve("someone")


def test_search_tags_sorting_and_pages(page: Page, store: MemoryStore) -> None:
    for n in range(30):
        store.create(IdentityInput(id=f"user_{n:02}", tags=["beta"] if n % 10 == 0 else []))
        store.record(f"user_{n:02}", cost=Decimal(n) / 100)
    sign_in(page)
    links = page.locator("#identities tbody a")
    expect(links).to_have_count(25)
    page.get_by_role("button", name="Next").click()
    expect(links).to_have_text([f"user_{n}" for n in range(25, 30)])
    expect(page.get_by_role("button", name="Next")).to_be_disabled()
    page.get_by_role("button", name="Previous").click()
    expect(links).to_have_count(25)
    expect(page.get_by_role("button", name="Previous")).to_be_disabled()
    page.get_by_role("button", name="Cost").click()  # most expensive first
    expect(page.get_by_role("columnheader", name="Cost")).to_have_attribute("aria-sort", "descending")
    expect(links.first).to_have_text("user_24")
    page.get_by_label("Tag").fill("beta")
    page.get_by_role("button", name="Filter").click()
    expect(links).to_have_count(3)
    page.get_by_label("Search").fill("user_2")
    page.get_by_role("button", name="Filter").click()
    expect(links).to_have_text(["user_20"])
