"""Identity validation: every limit at and over the edge; the error names the field."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from identity_middleware.core.models import (
    Budget,
    IdentityInput,
    IdentityUpdate,
    Period,
    budget_status,
    metrics_from_totals,
)
from identity_middleware.core.validation import InvalidIdentity


def invalid_field(data: object, model: type[IdentityUpdate] = IdentityInput) -> str:
    with pytest.raises(InvalidIdentity) as caught:
        model.parse(data)
    return caught.value.field


def fields(count: int, prefix: str = "k") -> dict[str, Any]:
    return {f"{prefix}{index}": index for index in range(count)}


# --- id ----------------------------------------------------------------------------------------


def test_an_id_of_255_characters_is_accepted() -> None:
    assert IdentityInput.parse({"id": "x" * 255}).id == "x" * 255


def test_an_id_of_256_characters_is_refused() -> None:
    assert invalid_field({"id": "x" * 256}) == "id"


def test_an_id_of_one_character_is_accepted() -> None:
    assert IdentityInput.parse({"id": "x"}).id == "x"


def test_an_empty_id_is_refused() -> None:
    assert invalid_field({"id": ""}) == "id"


def test_a_missing_id_is_refused() -> None:
    assert invalid_field({"display_name": "Ann"}) == "id"


def test_a_null_id_is_refused() -> None:
    assert invalid_field({"id": None}) == "id"


def test_a_numeric_id_is_refused() -> None:
    assert invalid_field({"id": 42}) == "id"


@pytest.mark.parametrize("char", ["\x00", "\n", "\r", "\t", "\x1b", "\x7f", "\x85"])
def test_an_id_with_a_control_character_is_refused(char: str) -> None:
    assert invalid_field({"id": f"user{char}1"}) == "id"


def test_a_unicode_id_is_accepted() -> None:
    assert IdentityInput.parse({"id": "usér-日本-🙂"}).id == "usér-日本-🙂"


def test_the_id_limit_counts_characters_not_bytes() -> None:
    assert IdentityInput.parse({"id": "é" * 255}).id == "é" * 255


def test_external_id_is_accepted_as_the_id() -> None:
    assert IdentityInput.parse({"external_id": "user_1"}).id == "user_1"


def test_an_invalid_external_id_is_refused_under_the_name_sent() -> None:
    assert invalid_field({"external_id": "a\x00b"}) == "external_id"


def test_the_id_is_not_one_of_the_changes() -> None:
    assert "id" not in IdentityInput.parse({"id": "u", "display_name": "Ann"}).changes()


# --- the identity itself -----------------------------------------------------------------------


@pytest.mark.parametrize("data", ["user_1", 42, ["id"], None])
def test_an_identity_that_is_not_an_object_is_refused(data: object) -> None:
    assert invalid_field(data) == "identity"


def test_an_update_that_is_not_an_object_is_refused() -> None:
    assert invalid_field("x", IdentityUpdate) == "identity"


def test_unknown_fields_are_ignored() -> None:
    identity = IdentityInput.parse({"id": "u", "favourite_colour": "green"})
    assert identity.changes() == {}


# --- email -------------------------------------------------------------------------------------


def test_a_basic_email_is_accepted() -> None:
    assert IdentityInput.parse({"id": "u", "email": "ann@example.com"}).email == "ann@example.com"


@pytest.mark.parametrize("email", ["ann", "ann@", "@example.com", "ann@example", "a b@example.com",
                                   "ann@@example.com", "ann@example.com\n", ""])
def test_a_malformed_email_is_refused(email: str) -> None:
    assert invalid_field({"id": "u", "email": email}) == "email"


def test_a_non_string_email_is_refused() -> None:
    assert invalid_field({"id": "u", "email": 7}) == "email"


def test_a_null_email_clears_it() -> None:
    identity = IdentityInput.parse({"id": "u", "email": None})
    assert identity.changes() == {"email": None}


# --- display name and avatar -------------------------------------------------------------------


def test_a_display_name_of_1024_characters_is_accepted() -> None:
    assert IdentityInput.parse({"id": "u", "display_name": "a" * 1024}).display_name == "a" * 1024


def test_a_display_name_of_1025_characters_is_refused() -> None:
    assert invalid_field({"id": "u", "display_name": "a" * 1025}) == "display_name"


def test_a_display_name_with_a_control_character_is_refused() -> None:
    assert invalid_field({"id": "u", "display_name": "Ann\x00"}) == "display_name"


def test_a_unicode_display_name_is_accepted() -> None:
    assert IdentityInput.parse({"id": "u", "display_name": "Zoë 山田"}).display_name == "Zoë 山田"


def test_logo_url_is_stored_as_avatar_url() -> None:
    identity = IdentityInput.parse({"id": "u", "logo_url": "https://example.com/a.png"})
    assert identity.avatar_url == "https://example.com/a.png"
    assert identity.changes() == {"avatar_url": "https://example.com/a.png"}


def test_avatar_url_is_accepted_under_its_own_name() -> None:
    identity = IdentityInput.parse({"id": "u", "avatar_url": "https://example.com/a.png"})
    assert identity.changes() == {"avatar_url": "https://example.com/a.png"}


def test_an_invalid_logo_url_is_reported_as_avatar_url() -> None:
    assert invalid_field({"id": "u", "logo_url": 5}) == "avatar_url"


# --- metadata ----------------------------------------------------------------------------------


def test_metadata_with_20_fields_is_accepted() -> None:
    assert IdentityInput.parse({"id": "u", "metadata": fields(20)}).metadata == fields(20)


def test_metadata_with_21_fields_is_refused() -> None:
    assert invalid_field({"id": "u", "metadata": fields(21)}) == "metadata"


def test_an_array_of_metadata_objects_is_merged_left_to_right() -> None:
    identity = IdentityInput.parse({"id": "u", "metadata": [{"plan": "free", "a": 1}, {"plan": "pro"}]})
    assert identity.metadata == {"plan": "pro", "a": 1}


def test_merged_metadata_with_20_fields_is_accepted() -> None:
    parts = [fields(10, "a"), fields(10, "b")]
    assert IdentityInput.parse({"id": "u", "metadata": parts}).metadata == {**fields(10, "a"), **fields(10, "b")}


def test_merged_metadata_with_21_fields_is_refused() -> None:
    assert invalid_field({"id": "u", "metadata": [fields(10, "a"), fields(11, "b")]}) == "metadata"


def test_the_limit_counts_merged_fields_not_sent_ones() -> None:
    # 30 fields sent, but the same 15 keys twice: 15 fields once merged.
    identity = IdentityInput.parse({"id": "u", "metadata": [fields(15), fields(15)]})
    assert identity.metadata is not None
    assert len(identity.metadata) == 15


@pytest.mark.parametrize("item", ["x", 1, None, ["nested"]])
def test_a_metadata_array_item_that_is_not_an_object_is_refused(item: object) -> None:
    assert invalid_field({"id": "u", "metadata": [{"a": 1}, item]}) == "metadata"


@pytest.mark.parametrize("metadata", ["plan=pro", 3, True])
def test_metadata_that_is_neither_object_nor_array_is_refused(metadata: object) -> None:
    assert invalid_field({"id": "u", "metadata": metadata}) == "metadata"


def test_an_empty_metadata_array_is_an_empty_object() -> None:
    assert IdentityInput.parse({"id": "u", "metadata": []}).metadata == {}


# --- tags --------------------------------------------------------------------------------------


def test_ten_tags_are_accepted() -> None:
    tags = [f"t{index}" for index in range(10)]
    assert IdentityInput.parse({"id": "u", "tags": tags}).tags == tags


def test_eleven_tags_are_refused() -> None:
    assert invalid_field({"id": "u", "tags": [f"t{index}" for index in range(11)]}) == "tags"


def test_tags_keep_their_order_and_drop_repeats() -> None:
    assert IdentityInput.parse({"id": "u", "tags": ["b", "a", "b"]}).tags == ["b", "a"]


@pytest.mark.parametrize("tags", ["vip", [1], ["ok", None], [""], ["a\nb"], ["x" * 256]])
def test_malformed_tags_are_refused(tags: object) -> None:
    assert invalid_field({"id": "u", "tags": tags}) == "tags"


def test_a_tag_of_255_characters_is_accepted() -> None:
    assert IdentityInput.parse({"id": "u", "tags": ["x" * 255]}).tags == ["x" * 255]


# --- partial updates ---------------------------------------------------------------------------


def test_changes_contain_only_the_fields_sent() -> None:
    identity = IdentityInput.parse({"id": "u", "display_name": "Ann", "tags": ["vip"]})
    assert identity.changes() == {"display_name": "Ann", "tags": ["vip"]}


def test_an_identity_with_only_an_id_changes_nothing() -> None:
    assert IdentityInput.parse({"id": "u"}).changes() == {}


def test_an_update_without_id_is_valid() -> None:
    assert IdentityUpdate.parse({"email": "ann@example.com"}).changes() == {"email": "ann@example.com"}


def test_an_update_is_validated_like_an_identity() -> None:
    assert invalid_field({"tags": [f"t{index}" for index in range(11)]}, IdentityUpdate) == "tags"


def test_the_first_invalid_field_is_named_with_a_message() -> None:
    with pytest.raises(InvalidIdentity) as caught:
        IdentityInput.parse({"id": "u", "email": "nope"})
    assert caught.value.field == "email"
    assert caught.value.message
    assert not caught.value.message.startswith("Value error")


def test_invalid_identity_is_a_value_error() -> None:
    assert issubclass(InvalidIdentity, ValueError)


# --- budgets -----------------------------------------------------------------------------------


def test_a_budget_amount_keeps_its_exact_decimal() -> None:
    assert Budget(period=Period.MONTHLY, amount="0.1").amount == Decimal("0.1")  # type: ignore[arg-type]


def test_a_budget_takes_a_float_through_str() -> None:
    assert Budget(period="daily", amount=0.1).amount == Decimal("0.1")  # type: ignore[arg-type]


@pytest.mark.parametrize("amount", [0, "0", "-1", -0.5])
def test_a_budget_must_be_greater_than_zero(amount: object) -> None:
    with pytest.raises(ValidationError):
        Budget(period=Period.DAILY, amount=amount)  # type: ignore[arg-type]


@pytest.mark.parametrize("amount", [True, None, "NaN", "Infinity", "lots"])
def test_a_budget_amount_must_be_a_finite_number(amount: object) -> None:
    with pytest.raises(ValidationError):
        Budget(period=Period.DAILY, amount=amount)  # type: ignore[arg-type]


def test_a_budget_period_must_be_known() -> None:
    with pytest.raises(ValidationError):
        Budget(period="hourly", amount="1")  # type: ignore[arg-type]


def test_a_budget_dumps_its_amount_with_two_places() -> None:
    assert Budget(period=Period.DAILY, amount="5").model_dump(mode="json") == {  # type: ignore[arg-type]
        "period": "daily", "amount": "5.00"}


# --- budget status and metrics -----------------------------------------------------------------

START = datetime(2026, 11, 1, tzinfo=UTC)
RESETS = datetime(2026, 12, 1, tzinfo=UTC)
USD = 1_000_000_000


def test_budget_status_converts_nanos_to_dollars() -> None:
    status = budget_status(Period.MONTHLY, 10 * USD, 2_500_000_000, USD // 2, START, RESETS)
    assert (status.amount, status.spent, status.reserved) == (Decimal(10), Decimal("2.5"), Decimal("0.5"))
    assert (status.period_start, status.resets_at) == (START, RESETS)


def test_budget_status_remaining_ignores_reservations() -> None:
    status = budget_status(Period.MONTHLY, 10 * USD, 4 * USD, 3 * USD, START, RESETS)
    assert status.remaining == Decimal(6)


def test_budget_status_remaining_is_never_negative() -> None:
    status = budget_status(Period.MONTHLY, 10 * USD, 12 * USD, 0, START, RESETS)
    assert status.remaining == Decimal(0)


def test_budget_status_percent_is_spent_over_amount() -> None:
    assert budget_status(Period.DAILY, 8 * USD, 2 * USD, 5 * USD, START, RESETS).percent == 25.0
    assert budget_status(Period.DAILY, 8 * USD, 12 * USD, 0, START, RESETS).percent == 150.0


def test_budget_status_dumps_money_as_decimal_strings() -> None:
    dumped = budget_status(Period.DAILY, 10 * USD, USD // 5, 0, START, RESETS).model_dump(mode="json")
    assert (dumped["amount"], dumped["spent"], dumped["reserved"], dumped["remaining"]) == (
        "10.00", "0.20", "0.00", "9.80")


def test_metrics_sum_tokens_and_convert_cost() -> None:
    metrics = metrics_from_totals(cost=100_000_000, input_tokens=30, output_tokens=12, requests=4, errors=1)
    assert metrics.total_cost == Decimal("0.1")
    assert metrics.total_tokens == 42
    assert metrics.total_requests == 4
    assert metrics.error_rate == 0.25


def test_metrics_error_rate_is_zero_without_requests() -> None:
    assert metrics_from_totals(0, 0, 0, 0, 0).error_rate == 0.0


def test_metrics_dump_cost_as_a_decimal_string() -> None:
    assert metrics_from_totals(1, 0, 0, 1, 0).model_dump(mode="json")["total_cost"] == "0.000000001"


# -- budget alerts: orq's rule, "A TOKENS alert is rejected" ------------------------------------------
def test_a_tokens_alert_is_refused_on_every_write() -> None:
    from identity_middleware.core.budgets import Alert, BudgetChanges, BudgetSpec

    tokens = {"threshold_percent": 80, "dimension": "tokens"}
    for write in (lambda: Alert(threshold_percent=80, dimension="tokens"),
                  lambda: BudgetSpec(scope="workspace", token_limit=10, alerts=[tokens]),
                  lambda: BudgetChanges(alerts=[tokens])):
        with pytest.raises(ValidationError, match="a TOKENS alert is rejected"):
            write()
    assert Alert(threshold_percent=80).dimension == "cost"


def test_a_tokens_alert_an_earlier_version_stored_is_kept_through_changes() -> None:
    import json

    from identity_middleware.core.budgets import BudgetChanges, ScopedBudget

    record = json.dumps({"scope": "workspace", "period": "daily", "token_limit": 10, "id": "bg_1",
                         "alerts": [{"id": "a1", "threshold_percent": 80, "dimension": "tokens"}],
                         "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"})
    budget = ScopedBudget.from_record(record)
    assert [alert.dimension for alert in budget.alerts] == ["tokens"]
    changed = budget.changed(BudgetChanges(is_active=False), datetime(2026, 1, 2, tzinfo=UTC))
    assert changed.alerts == budget.alerts and changed.is_active is False
    assert ScopedBudget.from_record(changed.to_record()) == changed
