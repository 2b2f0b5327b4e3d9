"""The admission decision: `spent + reserved >= amount` blocks; the budget resetting last is named."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from identity_middleware.core.admission import BudgetState, ModelUsage, Usage, decide
from identity_middleware.core.periods import Period, period_bounds

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
USD = 1_000_000_000


def state(
    period: Period = Period.DAILY, amount: int = 10 * USD, spent: int = 0, reserved: int = 0,
    resets_at: datetime | None = None,
) -> BudgetState:
    start, end = period_bounds(period, NOW)
    return BudgetState(period, amount, spent, reserved, start, resets_at or end)


# --- one budget --------------------------------------------------------------------------------


def test_spend_below_the_amount_passes() -> None:
    assert not state(spent=10 * USD - 1).blocks(0)


def test_spend_exactly_at_the_amount_blocks() -> None:
    assert state(spent=10 * USD).blocks(0)


def test_spend_over_the_amount_blocks() -> None:
    assert state(spent=11 * USD).blocks(0)


def test_reservations_count_towards_the_limit() -> None:
    assert state(spent=6 * USD, reserved=4 * USD).blocks(0)


def test_spend_plus_reservations_just_below_the_amount_passes() -> None:
    assert not state(spent=6 * USD, reserved=4 * USD - 1).blocks(0)


def test_an_estimate_that_would_overshoot_blocks() -> None:
    assert state(spent=6 * USD, reserved=2 * USD).blocks(2 * USD + 1)


def test_an_estimate_that_fits_exactly_passes() -> None:
    assert not state(spent=6 * USD, reserved=2 * USD).blocks(2 * USD)


def test_an_estimate_does_not_rescue_a_spent_budget() -> None:
    assert state(spent=10 * USD).blocks(1)


def test_no_estimate_only_needs_headroom_of_one_nano() -> None:
    assert not state(spent=10 * USD - 1).blocks(0)


# --- decide ------------------------------------------------------------------------------------


def test_no_budgets_admit_the_request() -> None:
    assert decide([], 0, NOW) is None


def test_no_budgets_admit_even_a_large_estimate() -> None:
    assert decide([], 1_000 * USD, NOW) is None


def test_budgets_with_headroom_admit_the_request() -> None:
    assert decide([state(Period.DAILY, spent=USD), state(Period.MONTHLY, spent=USD)], 0, NOW) is None


def test_a_blocking_budget_is_named_with_its_money_in_dollars() -> None:
    block = decide([state(Period.DAILY, amount=5 * USD, spent=5 * USD, reserved=0)], 0, NOW)
    assert block is not None
    assert block.period is Period.DAILY
    assert (block.amount, block.spent, block.reserved) == (Decimal(5), Decimal(5), Decimal(0))


def test_a_blocked_request_may_retry_when_the_period_resets() -> None:
    block = decide([state(Period.DAILY, spent=10 * USD)], 0, NOW)
    assert block is not None
    assert block.resets_at == datetime(2026, 11, 23, tzinfo=UTC)
    assert block.retry_after == 12 * 3600


def test_of_several_blocking_budgets_the_one_resetting_last_is_named() -> None:
    daily = state(Period.DAILY, spent=10 * USD)
    monthly = state(Period.MONTHLY, spent=10 * USD)
    weekly = state(Period.WEEKLY, spent=10 * USD)
    block = decide([daily, monthly, weekly], 0, NOW)
    assert block is not None
    assert block.period is Period.MONTHLY
    assert block.resets_at == datetime(2026, 12, 1, tzinfo=UTC)
    assert block.retry_after == int((datetime(2026, 12, 1, tzinfo=UTC) - NOW).total_seconds())


def test_of_blocking_budgets_resetting_together_the_longer_period_is_named() -> None:
    # A month's last day: daily and monthly (and on Dec 31 yearly) reset at the same instant; the
    # budget named must not depend on the day, nor on the order the store lists them in.
    midnight = datetime(2027, 1, 1, tzinfo=UTC)
    tied = [state(period, spent=10 * USD, resets_at=midnight)
            for period in (Period.DAILY, Period.YEARLY, Period.MONTHLY, Period.WEEKLY)]
    for order in (tied, tied[::-1]):
        block = decide(order, 0, NOW)
        assert block is not None and block.period is Period.YEARLY and block.resets_at == midnight


def test_a_budget_with_headroom_is_not_named_even_if_it_resets_later() -> None:
    daily = state(Period.DAILY, spent=10 * USD)
    yearly = state(Period.YEARLY, spent=USD)
    block = decide([yearly, daily], 0, NOW)
    assert block is not None
    assert block.period is Period.DAILY


def test_the_estimate_applies_to_every_budget() -> None:
    daily = state(Period.DAILY, amount=10 * USD, spent=9 * USD)
    monthly = state(Period.MONTHLY, amount=100 * USD, spent=50 * USD)
    block = decide([daily, monthly], 2 * USD, NOW)
    assert block is not None
    assert block.period is Period.DAILY


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    resets = NOW + timedelta(seconds=10, milliseconds=1)
    block = decide([state(spent=10 * USD, resets_at=resets)], 0, NOW)
    assert block is not None
    assert block.retry_after == 11


def test_retry_after_is_at_least_one_second() -> None:
    block = decide([state(spent=10 * USD, resets_at=NOW)], 0, NOW)
    assert block is not None
    assert block.retry_after == 1


@given(
    amount=st.integers(min_value=1, max_value=10**15),
    spent=st.integers(min_value=0, max_value=10**15),
    reserved=st.integers(min_value=0, max_value=10**15),
    estimate=st.integers(min_value=0, max_value=10**15),
)
def test_blocks_exactly_when_the_rule_says(amount: int, spent: int, reserved: int, estimate: int) -> None:
    expected = spent + reserved >= amount or spent + reserved + estimate > amount
    assert state(amount=amount, spent=spent, reserved=reserved).blocks(estimate) is expected


# --- usage -------------------------------------------------------------------------------------


def test_usage_adds_up_calls_and_counts_models() -> None:
    usage = Usage()
    usage.add(5, 10, 2, "gpt-4o")
    usage.add(7, 1, 1, "gpt-4o")
    usage.add(1, 0, 0, None)
    assert (usage.cost, usage.input_tokens, usage.output_tokens) == (13, 11, 3)
    assert usage.models == {"gpt-4o": ModelUsage(requests=2, cost=12, input_tokens=11, output_tokens=3)}


def test_of_scoped_budgets_resetting_together_the_longer_period_is_named() -> None:
    from identity_middleware.core.budgets import ScopedBudget
    from identity_middleware.core.scoped import ScopedState, decide_scoped

    midnight = datetime(2027, 1, 1, tzinfo=UTC)

    def spent(period: str) -> ScopedState:
        budget = ScopedBudget(id=f"b_{period}", scope="identity", target="u", period=period, amount="10",
                              created_at=NOW, updated_at=NOW)
        return ScopedState(budget, 10 * USD, 0, 0, 0, NOW, midnight)

    tied = [spent("daily"), spent("monthly"), spent("weekly")]
    for order in (tied, tied[::-1]):
        block = decide_scoped(order, 0, NOW)
        assert block is not None and block.budget_id == "b_monthly" and block.resets_at == midnight
