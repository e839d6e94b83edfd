"""Refunds claw back a purchase's points pro rata; spent points become a debt paid by later credits."""
from datetime import timedelta

import pytest

from loyalty.errors import Conflict, Forbidden, InsufficientPoints, NotFound, ValidationFailed
from loyalty.points import service
from tests import factories
from tests.factories import D
from tests.service.ledger_helpers import (T0, assert_ledger_ok, balances, entries, entry_count, lots,
                                          use_rules, utc)

pytestmark = pytest.mark.usefixtures("ctx")


def refund(purchase, refund_no, amount, store_id="S1", now=T0):
    return service.refund_purchase(purchase.id, store_id, refund_no, D(amount), now=now)


def test_a_partial_refund_reverses_points_pro_rata(ctx):
    member = factories.member(now=T0)
    purchase = factories.purchase(member.id, "200.00", receipt_no="R9", now=T0).record

    outcome = refund(purchase, "F1", "50.00")

    assert outcome.replayed is False
    assert outcome.record.points_reversed == D("50.00")
    assert balances(member.id) == (D("150.00"), D("0.00"), D("150.00"), D("0.00"))
    assert entries(member.id) == [("earn_purchase", D("200.00")), ("reverse", D("-50.00"))]
    entry = service.history(member.id)[0][0]
    assert entry.description == "Refund F1 of purchase R9"
    assert entry.reference == {"type": "refund", "id": str(outcome.record.id)}
    assert outcome.record.entry_id == entry.id
    purchase = service.get_purchase(purchase.id)
    assert (purchase.refunded_amount, purchase.points_reversed) == (D("50.00"), D("50.00"))
    assert_ledger_ok()


def test_several_partial_refunds_add_up_to_exactly_the_points_earned(ctx):
    use_rules(points_per_unit=D("0.7"))
    member = factories.member(now=T0)
    purchase = factories.purchase(member.id, "10.00", now=T0).record  # 7.00 points

    reversed_ = [refund(purchase, f"F{n}", amount).record.points_reversed
                 for n, amount in enumerate(["3.33", "3.33", "3.34"])]

    assert reversed_ == [D("2.33"), D("2.33"), D("2.34")]
    assert sum(reversed_) == D("7.00")
    assert balances(member.id) == (D("0.00"), D("0.00"), D("0.00"), D("0.00"))
    assert_ledger_ok()


def test_a_refund_beyond_what_is_left_of_the_purchase_is_refused_and_changes_nothing(ctx):
    member = factories.member(now=T0)
    purchase = factories.purchase(member.id, "100.00", now=T0).record
    refund(purchase, "F1", "60.00")

    with pytest.raises(ValidationFailed) as refused:
        refund(purchase, "F2", "40.01")

    assert refused.value.errors == {"amount": ["Must be at most 40.00."]}
    assert balances(member.id)[0] == D("40.00")
    assert service.get_purchase(purchase.id).refunded_amount == D("60.00")
    assert_ledger_ok()


def test_a_full_refund_reverses_exactly_all_points_earned(ctx):
    member = factories.member(now=T0)
    purchase = factories.purchase(member.id, "99.99", now=T0).record
    factories.purchase(member.id, "5.00", now=T0)

    outcome = refund(purchase, "F1", "99.99")

    assert outcome.record.points_reversed == D("99.99")
    assert balances(member.id) == (D("5.00"), D("0.00"), D("5.00"), D("0.00"))
    assert lots(member.id) == [("available", D("99.99"), D("0.00")), ("available", D("5.00"), D("5.00"))]
    with pytest.raises(ValidationFailed):
        refund(purchase, "F2", "0.01")
    assert_ledger_ok()


def test_replaying_a_refund_returns_the_first_and_reverses_once(ctx):
    member = factories.member(now=T0)
    purchase = factories.purchase(member.id, "100.00", now=T0).record
    first = refund(purchase, "F1", "30.00")

    again = refund(purchase, "F1", "30.00", now=T0 + timedelta(minutes=1))

    assert again.replayed is True
    assert again.record.id == first.record.id
    assert balances(member.id)[0] == D("70.00")
    assert entries(member.id) == [("earn_purchase", D("100.00")), ("reverse", D("-30.00"))]
    assert_ledger_ok()


def test_the_same_refund_number_with_another_amount_is_a_conflict(ctx):
    member = factories.member(now=T0)
    purchase = factories.purchase(member.id, "100.00", now=T0).record
    refund(purchase, "F1", "30.00")

    with pytest.raises(Conflict):
        refund(purchase, "F1", "31.00")

    assert balances(member.id)[0] == D("70.00")
    assert_ledger_ok()


def test_the_same_refund_number_on_another_purchase_is_another_refund(ctx):
    member = factories.member(now=T0)
    first = factories.purchase(member.id, "100.00", now=T0).record
    second = factories.purchase(member.id, "100.00", now=T0).record

    refund(first, "F1", "10.00")
    refund(second, "F1", "10.00")

    assert balances(member.id)[0] == D("180.00")
    assert_ledger_ok()


def test_refund_after_points_spent_leaves_debt(ctx):
    member = factories.member(now=T0)
    purchase = factories.purchase(member.id, "100.00", now=T0).record
    service.pay_with_points(member.id, "S1", "P1", D("100"), now=T0)

    outcome = refund(purchase, "F1", "100.00")

    assert outcome.record.points_reversed == D("100.00")
    assert balances(member.id) == (D("-100.00"), D("0.00"), D("0.00"), D("100.00"))
    assert entries(member.id) == [("earn_purchase", D("100.00")), ("payment", D("-100.00")),
                                  ("reverse", D("-100.00"))]
    assert service.history(member.id)[0][0].balance_after == D("-100.00")
    assert_ledger_ok()


def test_a_member_in_debt_cannot_pay_with_points(ctx):
    member = factories.member(now=T0)
    purchase = factories.purchase(member.id, "100.00", now=T0).record
    service.pay_with_points(member.id, "S1", "P1", D("100"), now=T0)
    refund(purchase, "F1", "100.00")

    with pytest.raises(InsufficientPoints) as refused:
        service.pay_with_points(member.id, "S1", "P2", D("1"), now=T0)

    assert refused.value.extra["available"] == D("0.00")
    assert balances(member.id)[3] == D("100.00")
    assert_ledger_ok()


def test_later_purchases_pay_off_the_debt_first(ctx):
    member = factories.member(now=T0)
    purchase = factories.purchase(member.id, "100.00", now=T0).record
    service.pay_with_points(member.id, "S1", "P1", D("100"), now=T0)
    refund(purchase, "F1", "100.00")

    factories.purchase(member.id, "30.00", now=T0 + timedelta(days=1))
    assert balances(member.id) == (D("-70.00"), D("0.00"), D("30.00"), D("70.00"))
    assert_ledger_ok()

    factories.purchase(member.id, "150.00", now=T0 + timedelta(days=2))
    assert balances(member.id) == (D("80.00"), D("0.00"), D("180.00"), D("0.00"))
    assert lots(member.id)[1:] == [("available", D("30.00"), D("0.00")),
                                   ("available", D("150.00"), D("80.00"))]
    service.pay_with_points(member.id, "S1", "P2", D("80"), now=T0 + timedelta(days=2))
    assert balances(member.id)[0] == D("0.00")
    assert_ledger_ok()


def test_a_refund_takes_what_is_left_of_its_own_purchase_then_other_points_then_debt(ctx):
    member = factories.member(now=T0)
    purchase = factories.purchase(member.id, "100.00", now=T0).record
    service.pay_with_points(member.id, "S1", "P1", D("80"), now=T0)  # 20 left in the lot
    factories.purchase(member.id, "50.00", now=T0)

    refund(purchase, "F1", "100.00")

    # 20 from the purchase's own lot, 50 from the other lot, 30 owed.
    assert lots(member.id) == [("available", D("100.00"), D("0.00")), ("available", D("50.00"), D("0.00"))]
    assert balances(member.id) == (D("-30.00"), D("0.00"), D("50.00"), D("30.00"))
    assert_ledger_ok()


def test_a_refund_takes_the_purchase_own_points_before_earlier_expiring_ones(ctx):
    use_rules(expiry_days=30)
    member = factories.member(now=T0)
    factories.purchase(member.id, "40.00", now=T0)  # expires first
    use_rules(expiry_days=365)
    purchase = factories.purchase(member.id, "60.00", now=T0).record

    refund(purchase, "F1", "30.00")

    assert lots(member.id) == [("available", D("40.00"), D("40.00")), ("available", D("60.00"), D("30.00"))]
    assert_ledger_ok()


def test_refund_of_a_pending_purchase_takes_from_its_pending_points(ctx):
    member = factories.member(now=T0)
    factories.purchase(member.id, "50.00", now=T0)  # available points, left alone
    use_rules(pending_days=7)
    purchase = factories.purchase(member.id, "100.00", now=T0).record

    refund(purchase, "F1", "40.00", now=T0 + timedelta(days=1))

    assert balances(member.id) == (D("50.00"), D("60.00"), D("110.00"), D("0.00"))
    assert lots(member.id) == [("available", D("50.00"), D("50.00")), ("pending", D("100.00"), D("60.00"))]
    assert_ledger_ok()

    refund(purchase, "F2", "60.00", now=T0 + timedelta(days=2))
    assert balances(member.id) == (D("50.00"), D("0.00"), D("50.00"), D("0.00"))
    assert_ledger_ok()


def test_a_partly_refunded_pending_purchase_releases_what_is_left(ctx):
    use_rules(pending_days=7)
    member = factories.member(now=T0)
    purchase = factories.purchase(member.id, "100.00", now=T0).record
    refund(purchase, "F1", "25.00", now=T0 + timedelta(days=1))

    factories.purchase(member.id, "1.00", now=T0 + timedelta(days=8))

    assert balances(member.id)[:2] == (D("75.00"), D("1.00"))
    assert_ledger_ok()


def test_a_pending_purchase_released_into_debt_pays_the_debt(ctx):
    member = factories.member(now=T0)
    spent = factories.purchase(member.id, "50.00", now=T0).record
    service.pay_with_points(member.id, "S1", "P1", D("50"), now=T0)
    use_rules(pending_days=7)
    factories.purchase(member.id, "100.00", now=T0)
    refund(spent, "F1", "50.00", now=T0)
    assert balances(member.id) == (D("-50.00"), D("100.00"), D("100.00"), D("50.00"))
    assert_ledger_ok()

    factories.purchase(member.id, "1.00", now=T0 + timedelta(days=7))

    assert balances(member.id) == (D("50.00"), D("1.00"), D("101.00"), D("0.00"))
    assert_ledger_ok()


def test_a_refund_of_a_purchase_that_earned_nothing_writes_no_entry(ctx):
    use_rules(min_amount=D("20.00"))
    member = factories.member(now=T0)
    purchase = factories.purchase(member.id, "10.00", now=T0).record

    outcome = refund(purchase, "F1", "10.00")

    assert outcome.record.points_reversed == D("0.00")
    assert outcome.record.entry_id is None
    assert entry_count() == 0
    assert service.get_purchase(purchase.id).refunded_amount == D("10.00")
    assert_ledger_ok()


@pytest.mark.parametrize("amount", ["0.00", "-10.00"])
def test_a_refund_of_nothing_or_less_is_refused_and_changes_nothing(ctx, amount):
    member = factories.member(now=T0)
    purchase = factories.purchase(member.id, "100.00", now=T0).record
    refund(purchase, "F1", "100.00")

    with pytest.raises(ValidationFailed):
        refund(purchase, "F2", amount)

    assert service.get_purchase(purchase.id).refunded_amount == D("100.00")
    with pytest.raises(ValidationFailed):
        refund(purchase, "F3", "10.00")
    assert_ledger_ok()


def test_a_refund_at_another_store_is_forbidden(ctx):
    member = factories.member(now=T0)
    purchase = factories.purchase(member.id, "100.00", store_id="S1", now=T0).record

    with pytest.raises(Forbidden):
        refund(purchase, "F1", "10.00", store_id="S2")

    assert balances(member.id)[0] == D("100.00")


def test_an_admin_refund_without_a_store_is_allowed(ctx):
    member = factories.member(now=T0)
    purchase = factories.purchase(member.id, "100.00", store_id="S1", now=T0).record

    refund(purchase, "F1", "10.00", store_id=None)

    assert balances(member.id)[0] == D("90.00")
    assert_ledger_ok()


def test_a_refund_of_an_unknown_purchase_is_not_found(ctx):
    with pytest.raises(NotFound):
        service.refund_purchase(999_999, "S1", "F1", D("1.00"), now=T0)


def test_refunding_a_purchase_whose_points_expired_does_not_take_them_twice(ctx):
    use_rules(expiry_policy="end_of_month")
    member = factories.member(now=T0)
    purchase = factories.purchase(member.id, "100.00", now=utc(2026, 3, 30, 4)).record
    factories.purchase(member.id, "50.00", now=utc(2026, 4, 1, 4))  # the 100 expire first

    outcome = refund(purchase, "F1", "100.00", now=utc(2026, 4, 2, 4))

    # The member already lost these points to expiry; the refund takes nothing more.
    assert outcome.record.points_reversed == D("0.00")
    assert entries(member.id) == [("earn_purchase", D("100.00")), ("expire", D("-100.00")),
                                  ("earn_purchase", D("50.00"))]
    assert balances(member.id) == (D("50.00"), D("0.00"), D("50.00"), D("0.00"))
    assert service.get_purchase(purchase.id).points_reversed == D("100.00")
    assert_ledger_ok()


def test_refunding_a_partly_spent_then_expired_purchase_takes_back_only_what_was_spent(ctx):
    use_rules(expiry_policy="end_of_month")
    member = factories.member(now=T0)
    purchase = factories.purchase(member.id, "100.00", now=utc(2026, 3, 30, 4)).record
    service.pay_with_points(member.id, "S1", "P1", D("30"), now=utc(2026, 3, 30, 5))
    factories.purchase(member.id, "50.00", now=utc(2026, 4, 1, 4))  # the 70 left expire

    first = refund(purchase, "F1", "50.00", now=utc(2026, 4, 2, 4))  # 50 due: all expired already
    second = refund(purchase, "F2", "50.00", now=utc(2026, 4, 3, 4))  # 50 due: 20 expired, 30 spent

    assert (first.record.points_reversed, second.record.points_reversed) == (D("0.00"), D("30.00"))
    # Earned 150, of which the refunded purchase's 100 no longer count; 30 spent; 20 left.
    assert balances(member.id) == (D("20.00"), D("0.00"), D("50.00"), D("0.00"))
    assert sum(points for _, points in entries(member.id)) == D("20.00")
    assert service.get_purchase(purchase.id).points_reversed == D("100.00")
    assert_ledger_ok()
