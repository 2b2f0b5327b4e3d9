"""Degrade tiers and cost ceilings as values: validation, which tier a request's budgets reach, a call rewritten."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from identity_middleware import Config, Session, Tier
from identity_middleware.config import InvalidOption, problems
from identity_middleware.context import Meter
from identity_middleware.core.admission import Consumed
from identity_middleware.core.errors import RequestBudgetExceeded
from identity_middleware.core.models import Identity
from identity_middleware.core.tiers import Degrade, degrade_of, rewrite, tier_for, tightest
from identity_middleware.flow.headers import budget_headers

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
MONTH_START, MONTH_END = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)


def _consumed(key: str, used: int, amount: int) -> Consumed:
    return Consumed(key, used, amount, MONTH_END, MONTH_START)


@pytest.mark.parametrize("at", ["0", "-0.1", "1.01", "abc", float("nan"), True])
def test_a_tier_share_is_in_zero_to_one(at: Any) -> None:
    with pytest.raises(ValueError, match="at:"):
        Tier(at=at)


@pytest.mark.parametrize("options", [{"models": {"gpt-4o": ""}}, {"max_tokens": 0}, {"max_tokens": True},
                                     {"name": ""}])
def test_a_tier_refuses_what_cannot_work(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Tier(at="0.5", **options)


def test_a_tier_keeps_its_share_exactly_and_is_named_by_it() -> None:
    tier = Tier(at=0.8, models={"gpt-4o": "gpt-4o-mini"}, max_tokens=256)
    assert tier.at == Decimal("0.8") and tier.name == "0.8" and tier.model("gpt-4o") == "gpt-4o-mini"
    assert tier.model("o3") == "o3" and Tier(at="1").name == "1"


def test_degrade_tiers_ascend_and_are_tiers() -> None:
    assert degrade_of([Tier(at="0.9"), Tier(at="0.8")])[1] == [("[1]", "tiers ascend by 'at': 0.8 follows 0.9")]
    assert degrade_of(["0.8"])[1] == [("[0]", "a Tier, not '0.8'")]
    assert degrade_of({"monthly": []})[1] == [("['monthly']", "at least one Tier")]
    assert degrade_of(None) == (None, [])
    degrade, found = degrade_of({"monthly": [Tier(at="0.8")], "daily": Tier(at="0.5")})
    assert found == [] and degrade is not None and [t.at for t in degrade.tiers] == [Decimal("0.5"), Decimal("0.8")]


def test_invalid_degrade_options_are_refused_once_where_the_app_is_built() -> None:
    with pytest.raises(InvalidOption, match=r"degrade\[1\]: tiers ascend"):
        Config(degrade=[Tier(at="0.9"), Tier(at="0.8")])
    assert [str(p) for p in problems({"max_cost": "-1", "session": "s", "budget_headers": 1})] == [
        'max_cost: a positive USD amount such as "0.50", not \'-1\'',
        "session: a Session(max_cost, header=\"X-Session-Id\" or field=\"session_id\"), or None; not 's'",
        "budget_headers: True or False, not 1"]
    config = Config(degrade=[Tier(at="0.8")], max_cost="0.50", session=Session("2", header="X-Session-Id"))
    assert isinstance(config.degrade, Degrade) and config.max_cost == 500_000_000


def test_a_session_names_its_key_once() -> None:
    with pytest.raises(ValueError, match="name the session's key once"):
        Session("1")
    with pytest.raises(ValueError, match="name the session's key once"):
        Session("1", header="X-S", field="s")
    with pytest.raises(ValueError, match="ttl"):
        Session("1", header="X-S", ttl=0)
    assert Session("1", field="conversation").ttl == 86_400


def test_the_highest_tier_reached_by_the_tightest_budget_applies() -> None:
    tiers = Degrade(every=(Tier(at="0.8"), Tier(at="0.95")))
    daily, monthly = _consumed("daily", 10, 100), _consumed("monthly", 800, 1000)
    assert tightest([daily, monthly]) is monthly
    assert tier_for([daily, monthly], tiers) is tiers.every[0]
    assert tier_for([daily, _consumed("monthly", 950, 1000)], tiers) is tiers.every[1]
    assert tier_for([daily, _consumed("monthly", 799, 1000)], tiers) is None
    assert tier_for([], tiers) is None


def test_per_budget_tiers_read_their_own_budget_only() -> None:
    eighty, half = Tier(at="0.8"), Tier(at="0.5")
    degrade = Degrade(by_budget={"monthly": (eighty,), "daily": (half,)})
    assert tier_for([_consumed("daily", 90, 100), _consumed("monthly", 0, 1000)], degrade) is half
    assert tier_for([_consumed("daily", 90, 100), _consumed("monthly", 900, 1000)], degrade) is eighty
    assert tier_for([_consumed("weekly", 100, 100)], degrade) is None


def test_a_call_is_rewritten_to_its_tier_and_caps_only_lower() -> None:
    tier = Tier(at="0.8", models={"gpt-4o": "gpt-4o-mini"}, max_tokens=256)
    call: dict[str, Any] = {"model": "gpt-4o", "max_tokens": 1000, "max_completion_tokens": 100}
    rewrite(call, tier, "max_completion_tokens")
    assert call == {"model": "gpt-4o-mini", "max_tokens": 256, "max_completion_tokens": 100}
    uncapped: dict[str, Any] = {"model": "o3", "input": "hi"}
    rewrite(uncapped, tier, "max_output_tokens")
    assert uncapped == {"model": "o3", "input": "hi", "max_output_tokens": 256}
    untouched: dict[str, Any] = {"model": "gpt-4o", "max_tokens": 1000}
    rewrite(untouched, Tier(at="0.8"), "max_tokens")
    assert untouched == {"model": "gpt-4o", "max_tokens": 1000}


def _meter(cost: int) -> Meter:
    meter = Meter(Identity(_id="01JD000000000000000000TEST", external_id="u", created=NOW, updated=NOW))
    meter.usage.add(cost, 0, 0, None)
    return meter


def test_the_request_ceiling_is_reached_at_or_above_it() -> None:
    meter = _meter(499)
    meter.ceiling = 500
    meter.check_ceiling()
    meter.usage.add(1, 0, 0, None)
    with pytest.raises(RequestBudgetExceeded) as raised:
        meter.check_ceiling()
    answer = raised.value.response
    assert answer.status == 429 and ("x-should-retry", "false") in answer.headers
    assert b'"type":"request_budget_exceeded"' in answer.body and b'"max_cost":"0.0000005"' in answer.body


def test_budget_headers_in_micro_usd() -> None:
    meter = _meter(285_000)
    meter.budget = _consumed("monthly", 85_000_000, 100_000_000)
    meter.tier = Tier(at="0.80")
    assert dict(budget_headers(meter, NOW)) == {
        "x-request-cost": "0.000285", "x-budget-tier": "0.80",
        "ratelimit-policy": '"monthly";q=100000;w=2592000;qu="micro-usd"',
        "ratelimit": '"monthly";r=14715;t=734400'}
    meter.budget = Consumed("one_time", 120_000_000, 100_000_000, None)
    assert dict(budget_headers(meter, NOW))["ratelimit"] == '"one_time";r=0'
