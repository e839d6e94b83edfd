"""Earning points for purchases: rate, rules, the return window, and exactly-once by receipt."""
from datetime import timedelta

import pytest

from loyalty import clock
from loyalty.errors import Conflict, InsufficientPoints, NotFound, ValidationFailed
from loyalty.points import service
from tests import factories
from tests.factories import D
from tests.service.ledger_helpers import (T0, assert_ledger_ok, balances, entries, entry_count,
                                          lot_rows, lots, use_rules, utc)

pytestmark = pytest.mark.usefixtures("ctx")


def test_purchase_earns_one_point_per_yuan_available_at_once(ctx):
    member = factories.member(now=T0)
    outcome = factories.purchase(member.id, "199.00", receipt_no="R1", now=T0)

    assert outcome.replayed is False
    assert outcome.record.points_earned == D("199.00")
    assert outcome.record.lot.status == "available"
    assert outcome.record.available_at == T0
    assert balances(member.id) == (D("199.00"), D("0.00"), D("199.00"), D("0.00"))
    assert entries(member.id) == [("earn_purchase", D("199.00"))]
    assert_ledger_ok()


def test_purchase_entry_says_what_and_where_and_its_lot_expires_at_a_local_midnight(ctx):
    member = factories.member(now=T0)
    purchase = factories.purchase(member.id, "10.00", store_id="S7", receipt_no="R-42", now=T0).record

    [entry], _ = service.history(member.id)
    assert entry.description == "Purchase R-42 at store S7"
    assert entry.reference == {"type": "purchase", "id": str(purchase.id)}
    assert entry.balance_after == D("10.00")
    # Default policy: 365 days after available, to the end of that local day (16:00 UTC).
    assert entry.expires_at == utc(2027, 3, 10, 16)
    assert lot_rows(member.id)[0].expires_at == utc(2027, 3, 10, 16)
    assert_ledger_ok()


def test_purchase_points_follow_the_configured_rate_rounded_down(ctx):
    use_rules(points_per_unit=D("0.3"))
    member = factories.member(now=T0)

    outcome = factories.purchase(member.id, "33.33", now=T0)

    assert outcome.record.points_earned == D("9.99")  # 9.999 rounded down
    assert balances(member.id)[0] == D("9.99")
    assert_ledger_ok()


def test_purchase_below_the_minimum_amount_is_recorded_but_earns_nothing(ctx):
    use_rules(min_amount=D("20.00"))
    member = factories.member(now=T0)

    small = factories.purchase(member.id, "19.99", now=T0)
    enough = factories.purchase(member.id, "20.00", now=T0)

    assert small.record.id is not None and small.record.points_earned == D("0.00")
    assert small.record.lot is None
    assert enough.record.points_earned == D("20.00")
    assert entries(member.id) == [("earn_purchase", D("20.00"))]
    assert_ledger_ok()


def test_excluded_items_earn_nothing(ctx):
    use_rules(excluded_skus=("GIFTCARD",), excluded_categories=("tobacco",))
    member = factories.member(now=T0)
    items = [
        {"sku": "MILK", "category": "food", "quantity": 2, "amount": D("30.00")},
        {"sku": "GIFTCARD", "quantity": 1, "amount": D("100.00")},
        {"sku": "CIG", "category": "tobacco", "quantity": 1, "amount": D("25.50")},
    ]

    outcome = factories.purchase(member.id, "155.50", items=items, now=T0)

    assert outcome.record.eligible_amount == D("30.00")
    assert outcome.record.points_earned == D("30.00")
    assert outcome.record.items[1] == {"sku": "GIFTCARD", "quantity": 1, "amount": "100.00"}
    assert balances(member.id)[0] == D("30.00")
    assert_ledger_ok()


def test_items_adding_up_to_more_than_the_purchase_are_refused(ctx):
    member = factories.member(now=T0)
    items = [{"sku": "A", "quantity": 1, "amount": D("60.00")},
             {"sku": "B", "quantity": 1, "amount": D("60.00")}]

    with pytest.raises(ValidationFailed) as refused:
        factories.purchase(member.id, "100.00", items=items, now=T0)

    assert "items" in refused.value.errors
    assert entry_count() == 0
    assert_ledger_ok()


def test_purchase_with_a_return_window_is_pending_until_it_passes(ctx):
    use_rules(pending_days=7)
    member = factories.member(now=T0)

    outcome = factories.purchase(member.id, "100.00", now=T0)

    assert outcome.record.lot.status == "pending"
    assert outcome.record.available_at == T0 + timedelta(days=7)
    assert balances(member.id) == (D("0.00"), D("100.00"), D("100.00"), D("0.00"))
    assert service.points_summary(member.id, now=T0)["pending_lots"] == [
        {"points": D("100.00"), "available_at": T0 + timedelta(days=7)}]
    # Pending points cannot be spent.
    with pytest.raises(InsufficientPoints):
        service.pay_with_points(member.id, "S1", "P1", D("100"), now=T0 + timedelta(days=1))
    assert_ledger_ok()


def test_pending_points_become_available_on_the_next_write_after_the_window(ctx):
    use_rules(pending_days=7)
    member = factories.member(now=T0)
    factories.purchase(member.id, "100.00", now=T0)

    # A write one second before the window closes leaves them pending...
    factories.purchase(member.id, "1.00", now=T0 + timedelta(days=7, seconds=-1))
    assert balances(member.id)[:2] == (D("0.00"), D("101.00"))

    # ...the first write after it releases them (here, a sign-in).
    with clock.frozen_at(T0 + timedelta(days=7)):
        service.record_activity(member.id, "sign_in", "e1")
    assert balances(member.id)[:2] == (D("100.50"), D("1.00"))
    assert lots(member.id)[0] == ("available", D("100.00"), D("100.00"))
    # Releasing changes no balance, so it writes no entry.
    assert entries(member.id) == [("earn_purchase", D("100.00")), ("earn_purchase", D("1.00")),
                                  ("earn_activity", D("0.50"))]
    assert_ledger_ok()


def test_pending_points_expire_counted_from_when_they_become_available(ctx):
    use_rules(pending_days=7, expiry_days=30)
    member = factories.member(now=T0)

    factories.purchase(member.id, "10.00", now=T0)

    # Available on 2026-03-17 (local), last day 2026-04-16, expiring at its local midnight.
    assert lot_rows(member.id)[0].expires_at == utc(2026, 4, 16, 16)


def test_a_late_reported_purchase_whose_window_has_passed_is_available_at_once(ctx):
    use_rules(pending_days=7)
    member = factories.member(now=T0)

    outcome = factories.purchase(member.id, "50.00", occurred_at=T0 - timedelta(days=10), now=T0)

    assert outcome.record.lot.status == "available"
    assert outcome.record.occurred_at == T0 - timedelta(days=10)
    assert balances(member.id)[:2] == (D("50.00"), D("0.00"))
    assert_ledger_ok()


def test_purchase_in_the_future_is_refused_and_changes_nothing(ctx):
    member = factories.member(now=T0)

    with pytest.raises(ValidationFailed) as refused:
        factories.purchase(member.id, "10.00", occurred_at=T0 + timedelta(minutes=6), now=T0)

    assert "occurred_at" in refused.value.errors
    assert balances(member.id)[0] == D("0.00")
    assert entry_count() == 0


def test_a_till_clock_a_few_minutes_fast_is_tolerated(ctx):
    member = factories.member(now=T0)

    outcome = factories.purchase(member.id, "10.00", occurred_at=T0 + timedelta(minutes=4), now=T0)

    assert outcome.record.points_earned == D("10.00")
    assert_ledger_ok()


def test_a_purchase_in_another_currency_is_refused(ctx):
    member = factories.member(now=T0)

    with pytest.raises(ValidationFailed) as refused:
        factories.purchase(member.id, "10.00", currency="usd", now=T0)

    assert "currency" in refused.value.errors
    assert entry_count() == 0


def test_a_purchase_for_an_unknown_member_is_not_found(ctx):
    with pytest.raises(NotFound):
        factories.purchase(999_999, "10.00", now=T0)


@pytest.mark.parametrize("amount", ["0.00", "-5.00"])
def test_a_purchase_of_nothing_or_less_is_refused(ctx, amount):
    member = factories.member(now=T0)

    with pytest.raises(ValidationFailed) as refused:
        factories.purchase(member.id, amount, now=T0)

    assert "amount" in refused.value.errors
    assert entry_count() == 0


def test_replaying_a_receipt_returns_the_first_purchase_and_credits_once(ctx):
    member = factories.member(now=T0)
    first = factories.purchase(member.id, "88.00", store_id="S1", receipt_no="R1", now=T0)

    again = factories.purchase(member.id, "88.00", store_id="S1", receipt_no="R1",
                               now=T0 + timedelta(minutes=1))

    assert again.replayed is True
    assert again.record.id == first.record.id
    assert again.record.points_earned == D("88.00")
    assert again.member.id == member.id
    assert balances(member.id)[0] == D("88.00")
    assert entries(member.id) == [("earn_purchase", D("88.00"))]
    assert_ledger_ok()


def test_a_replay_is_recognised_whatever_the_amounts_trailing_zeros(ctx):
    member = factories.member(now=T0)
    first = factories.purchase(member.id, "88.00", receipt_no="R1", now=T0)

    again = factories.purchase(member.id, "88", receipt_no="R1", now=T0)

    assert again.replayed is True and again.record.id == first.record.id
    assert balances(member.id)[0] == D("88.00")


def test_the_same_receipt_with_a_different_amount_is_a_conflict(ctx):
    member = factories.member(now=T0)
    factories.purchase(member.id, "88.00", receipt_no="R1", now=T0)

    with pytest.raises(Conflict):
        factories.purchase(member.id, "89.00", receipt_no="R1", now=T0)

    assert balances(member.id)[0] == D("88.00")
    assert entries(member.id) == [("earn_purchase", D("88.00"))]
    assert_ledger_ok()


def test_the_same_receipt_for_another_member_is_a_conflict(ctx):
    alice, bob = factories.member(now=T0), factories.member(now=T0)
    factories.purchase(alice.id, "88.00", receipt_no="R1", now=T0)

    with pytest.raises(Conflict):
        factories.purchase(bob.id, "88.00", receipt_no="R1", now=T0)

    assert balances(bob.id)[0] == D("0.00")
    assert_ledger_ok()


def test_the_same_receipt_number_at_another_store_is_another_purchase(ctx):
    member = factories.member(now=T0)
    first = factories.purchase(member.id, "10.00", store_id="S1", receipt_no="R1", now=T0)

    second = factories.purchase(member.id, "10.00", store_id="S2", receipt_no="R1", now=T0)

    assert second.replayed is False and second.record.id != first.record.id
    assert balances(member.id)[0] == D("20.00")
    assert_ledger_ok()


def test_each_purchase_adds_to_the_balance_after(ctx):
    member = factories.member(now=T0)
    for amount in ("10.00", "20.50", "0.99"):
        factories.purchase(member.id, amount, now=T0)

    history, _ = service.history(member.id)
    assert [entry.balance_after for entry in history] == [D("31.49"), D("30.50"), D("10.00")]
    assert balances(member.id) == (D("31.49"), D("0.00"), D("31.49"), D("0.00"))
    assert_ledger_ok()
