"""Screenshots of the dashboard for the docs: ``.venv/bin/python tests/dashboard_screenshots.py [OUT_DIR]``.

Serves the demo app (``POST /chat`` behind ``IdentityMiddleware``, the admin app at ``/admin``) over a
MemoryStore, sends it real traffic (some of it refused by budgets), adds 29 days of history through
``store.record(now=...)``, and photographs every page with the system's Chromium: the Overview, the
identities list, one identity, the Budgets page (1280 px, light; team, project and credits budgets
among them), the Overview in the dark, and the
Overview and the identities list on a 390 px phone. Files: ``dashboard-*.png`` in OUT_DIR (default
``docs/``), listed by :data:`SHOTS`.
"""

from __future__ import annotations

import random
import re
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import sync_playwright

from identity_middleware import Budget, IdentityInput
from identity_middleware.core.budgets import BudgetSpec
from identity_middleware.stores import MemoryStore

sys.path.insert(0, str(Path(__file__).parent))  # run as a script: browser.py sits beside it
from browser import CHROMIUM, CHROMIUM_ARGS, demo_app, live_server

TOKEN = "screenshot-token"
PEOPLE = [
    ("acme-corp", {"display_name": "Acme Corp", "email": "ops@acme.example", "tags": ["enterprise"]}),
    ("jane@example.com", {"display_name": "Jane Doe", "email": "jane@example.com", "tags": ["pro"]}),
    ("team-research", {"display_name": "Research team", "tags": ["internal"]}),
]
HEADER_ONLY = ["user_4711", "user_0815", "cli-batch-job"]
SHOTS = ["dashboard-overview.png", "dashboard-identities.png", "dashboard-identity.png", "dashboard-budgets.png",
         "dashboard-overview-dark.png", "dashboard-overview-narrow.png", "dashboard-identities-narrow.png"]


def seed(base: str, store: MemoryStore) -> None:
    rng = random.Random(12)
    # History first (MemoryStore keeps one spend counter per period: a past record after today's
    # would start it again): what the last 29 days' traffic would have left, through store.record.
    now = datetime.now(UTC)
    for external_id, profile in PEOPLE:
        store.create(IdentityInput(id=external_id, **profile))
        for days_ago in range(1, 30):
            for _ in range(rng.randint(0, 4)):
                store.record(external_id, cost=Decimal(rng.randint(5, 140)) / 1000, input_tokens=rng.randint(100, 900),
                             output_tokens=rng.randint(30, 300), error=rng.random() < 0.04,
                             now=now - timedelta(days=days_ago))
    with httpx.Client(base_url=base) as client:
        for external_id, profile in PEOPLE:  # body identities: create and tag the record
            for _ in range(rng.randint(3, 9)):
                client.post("/chat", json={"identity": {"id": external_id, **profile}, "model": "gpt-4o-mini",
                                           "cost": f"0.0{rng.randint(10, 99)}", "input_tokens": rng.randint(200, 900),
                                           "output_tokens": rng.randint(50, 400), "fail": rng.random() < 0.08})
        for external_id in HEADER_ONLY:  # header identities: created bare
            for _ in range(rng.randint(1, 5)):
                client.post("/chat", headers={"X-Identity-Id": external_id},
                            json={"cost": f"0.00{rng.randint(1, 9)}", "input_tokens": 120, "output_tokens": 40})
    store.set_budget("jane@example.com", Budget(period="daily", amount=Decimal("0.20")))
    store.set_budget("jane@example.com", Budget(period="monthly", amount=Decimal("8.00")))
    store.set_budget("acme-corp", Budget(period="monthly", amount=Decimal("25.00")))
    store.set_budget("user_4711", Budget(period="daily", amount=Decimal("0.01")))
    store.create(IdentityInput(id="new-customer", display_name="New customer", tags=["trial"]))
    store.create_budget(BudgetSpec(scope="model", target="gpt-4o-mini", period="monthly", amount=Decimal("50")))
    store.create_budget(BudgetSpec(scope="provider", target="openai", period="monthly", amount=Decimal("200")))
    store.create_budget(BudgetSpec(scope="workspace", period="monthly", amount=Decimal("500")))
    # A team budget (orq's CEL match), a project's, and prepaid credits with a top-up.
    store.create_budget(BudgetSpec(scope="match", match='metadata.team == "research"', period="monthly",
                                   amount=Decimal("40")))
    store.create_budget(BudgetSpec(scope="project", target="search-assistant", period="monthly",
                                   amount=Decimal("120")))
    credits = store.create_budget(BudgetSpec(scope="identity", target="acme-corp", period="one_time",
                                             amount=Decimal("100")))
    store.top_up(credits.id, Decimal("50"), "invoice-2026-12")
    with httpx.Client(base_url=base) as client:  # over their budgets: refused, and logged by the store
        for external_id in ("user_4711", "user_4711", "jane@example.com"):
            client.post("/chat", headers={"X-Identity-Id": external_id}, json={"cost": "0.30"})


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    store = MemoryStore()
    with live_server(demo_app(store, TOKEN)) as base, sync_playwright() as playwright:
        seed(base, store)
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for scheme, width, height, pages in (("light", 1280, 760, ("overview", "identities", "identity", "budgets")),
                                             ("dark", 1280, 760, ("overview",)),
                                             ("light", 390, 844, ("overview", "identities"))):
            context = browser.new_context(viewport={"width": width, "height": height}, color_scheme=scheme)
            page = context.new_page()
            page.goto(f"{base}/admin/")
            page.get_by_label("Admin token").fill(TOKEN)
            page.get_by_role("button", name="Sign in").click()
            suffix = "-dark" if scheme == "dark" else "-narrow" if width < 500 else ""
            for name in pages:
                shoot(page, name)
                page.screenshot(path=str(out / f"dashboard-{name}{suffix}.png"), full_page=True)
            context.close()
        browser.close()
    print("wrote " + ", ".join(str(out / name) for name in SHOTS))


def shoot(page: Any, name: str) -> None:
    """Go to one page of the dashboard and wait until its data is on screen."""
    if name == "overview":
        page.get_by_role("link", name="Overview").click()
        page.get_by_role("region", name="Top spenders").get_by_role("link").first.wait_for()
    elif name == "identities":
        page.get_by_role("link", name="Identities").click()
        page.get_by_role("link", name="jane@example.com").wait_for()
        page.get_by_role("button", name="Cost").click()  # most expensive first
    elif name == "identity":
        page.get_by_role("link", name="jane@example.com").click()
        page.get_by_role("progressbar").first.wait_for()
        page.get_by_role("img", name=re.compile("Daily spend")).wait_for()
    else:
        page.get_by_role("link", name="Budgets").click()
        page.get_by_role("row", name=re.compile("gpt-4o-mini")).wait_for()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "docs")
