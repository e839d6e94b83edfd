"""Points paid as money at the till, earliest-expiring first, and their reversal back to the lots."""
from datetime import timedelta

import pytest

from loyalty.errors import Conflict, Forbidden, InsufficientPoints, NotFound, ValidationFailed
from loyalty.points import service
from tests import factories
from tests.factories import D
from tests.service.ledger_helpers import (T0, assert_ledger_ok, balances, entries, entry_count,
                                          lot_rows, lots, use_rules, utc)

pytestmark = pytest.mark.usefixtures("ctx")


def pay(member_id, points, payment_no="P1", store_id="S1", now=T0):
    return service.pay_with_points(member_id, store_id, payment_no, D(points), now=now)


def rich_member(points="500.00"):
    member = factories.member(now=T0)
    factories.purchase(member.id, points, now=T0)
    return member


def test_one_hundred_points_pay_one_yuan(ctx):
    member = rich_member()

    outcome = pay(member.id, "250")

    payment = outcome.record
    assert outcome.replayed is False
    assert (payment.points, payment.money_amount, payment.currency) == (D("250.00"), D("2.50"), "CNY")
    assert payment.status == "completed"
    assert balances(member.id) == (D("250.00"), D("0.00"), D("500.00"), D("0.00"))
    assert entries(member.id)[-1] == ("payment", D("-250.00"))
    assert service.history(member.id)[0][0].description == "Paid 2.50 CNY at store S1 (payment P1)"
    assert_ledger_ok()


@pytest.mark.parametrize("points", ["0.50", "150.5", "0", "-100"])
def test_points_that_are_not_a_whole_number_of_cents_are_refused(ctx, points):
    member = rich_member()

    with pytest.raises(ValidationFailed) as refused:
        pay(member.id, points)

    assert refused.value.errors == {"points": ["Must be a multiple of 1."]}
    assert balances(member.id)[0] == D("500.00")
    assert_ledger_ok()


def test_insufficient_points_are_refused_and_nothing_changes(ctx):
    member = rich_member("99.00")

    with pytest.raises(InsufficientPoints) as refused:
        pay(member.id, "100")

    assert refused.value.extra == {"available": D("99.00"), "needed": D("100.00")}
    assert balances(member.id)[0] == D("99.00")
    assert entries(member.id) == [("earn_purchase", D("99.00"))]
    assert lots(member.id) == [("available", D("99.00"), D("99.00"))]
    assert_ledger_ok()


def test_a_refused_payment_number_is_refused_again_even_after_points_arrive(ctx):
    """The till was told "not enough points" and took cash: a repeat of the same payment
    (a retry, a double send) must not charge the member now that they have the points."""
    member = rich_member("99.00")
    with pytest.raises(InsufficientPoints) as first:
        pay(member.id, "100")
    factories.purchase(member.id, "500.00", now=T0 + timedelta(minutes=1))

    with pytest.raises(InsufficientPoints) as again:
        pay(member.id, "100", now=T0 + timedelta(minutes=2))

    assert (again.value.message, again.value.extra) == (first.value.message, first.value.extra)
    assert again.value.extra == {"available": D("99.00"), "needed": D("100.00")}
    assert balances(member.id)[0] == D("599.00")
    assert [kind for kind, _ in entries(member.id)] == ["earn_purchase", "earn_purchase"]
    # a new payment number is a new payment, decided on the points there are now
    assert pay(member.id, "100", payment_no="P2", now=T0 + timedelta(minutes=3)).replayed is False
    assert balances(member.id)[0] == D("499.00")
    assert_ledger_ok()


@pytest.mark.parametrize("change", ["points", "member", "store"])
def test_a_refused_payment_number_reused_for_another_payment_is_a_conflict(ctx, change):
    member = rich_member("99.00")
    other = rich_member("500.00")
    with pytest.raises(InsufficientPoints):
        pay(member.id, "100")

    if change == "store":  # the number is the store's own: another store's P1 is another payment
        assert pay(member.id, "50", store_id="S2").replayed is False
        return
    with pytest.raises(Conflict) as refused:
        pay(other.id if change == "member" else member.id, "100" if change == "member" else "50")

    assert "P1" in refused.value.message
    assert entries(other.id) == [("earn_purchase", D("500.00"))]
    assert entries(member.id) == [("earn_purchase", D("99.00"))]


def test_spending_takes_the_earliest_expiring_points_first(ctx):
    member = factories.member(now=T0)
    use_rules(expiry_days=365)
    factories.purchase(member.id, "100.00", now=T0)  # expires 2027-03-10
    use_rules(expiry_days=30)
    factories.purchase(member.id, "100.00", now=T0)  # expires 2026-04-09: spent first
    use_rules(expiry_policy="never")
    factories.purchase(member.id, "100.00", now=T0)  # never expires: spent last

    pay(member.id, "150")

    assert lots(member.id) == [("available", D("100.00"), D("50.00")),
                               ("available", D("100.00"), D("0.00")),
                               ("available", D("100.00"), D("100.00"))]
    assert service.points_summary(member.id, now=T0)["expiring"] == [
        {"points": D("50.00"), "expires_at": utc(2027, 3, 10, 16)}]
    pay(member.id, "100", payment_no="P2")
    assert lots(member.id)[0] == ("available", D("100.00"), D("0.00"))
    assert lots(member.id)[2] == ("available", D("100.00"), D("50.00"))
    assert_ledger_ok()


def test_replaying_a_payment_returns_the_first_and_debits_once(ctx):
    member = rich_member()
    first = pay(member.id, "100", payment_no="P1")

    again = pay(member.id, "100", payment_no="P1", now=T0 + timedelta(seconds=30))

    assert again.replayed is True
    assert again.record.id == first.record.id
    assert balances(member.id)[0] == D("400.00")
    assert [t for t, _ in entries(member.id)] == ["earn_purchase", "payment"]
    assert_ledger_ok()


def test_the_same_payment_number_with_other_points_is_a_conflict(ctx):
    member = rich_member()
    pay(member.id, "100", payment_no="P1")

    with pytest.raises(Conflict):
        pay(member.id, "200", payment_no="P1")

    assert balances(member.id)[0] == D("400.00")
    assert_ledger_ok()


def test_the_same_payment_number_at_another_store_is_another_payment(ctx):
    member = rich_member()
    pay(member.id, "100", payment_no="P1", store_id="S1")

    other = pay(member.id, "100", payment_no="P1", store_id="S2")

    assert other.replayed is False
    assert balances(member.id)[0] == D("300.00")
    assert_ledger_ok()


def test_paying_for_an_unknown_member_is_not_found(ctx):
    with pytest.raises(NotFound):
        pay(999_999, "100")


def test_a_reversal_returns_the_points_to_their_lots_with_their_expiry(ctx):
    member = factories.member(now=T0)
    use_rules(expiry_days=30)
    factories.purchase(member.id, "60.00", now=T0)
    use_rules(expiry_days=365)
    factories.purchase(member.id, "100.00", now=T0)
    payment = pay(member.id, "100").record  # 60 from the first lot, 40 from the second
    factories.purchase(member.id, "10.00", now=T0 + timedelta(days=1))

    outcome = service.reverse_payment(payment.id, "S1", now=T0 + timedelta(days=2))

    assert outcome.replayed is False
    assert outcome.record.status == "reversed"
    assert outcome.record.reversed_at == T0 + timedelta(days=2)
    assert lots(member.id) == [("available", D("60.00"), D("60.00")),
                               ("available", D("100.00"), D("100.00")),
                               ("available", D("10.00"), D("10.00"))]
    assert service.points_summary(member.id, now=T0 + timedelta(days=2))["expiring"][0] == {
        "points": D("60.00"), "expires_at": utc(2026, 4, 9, 16)}
    assert balances(member.id) == (D("170.00"), D("0.00"), D("170.00"), D("0.00"))
    assert entries(member.id)[-1] == ("reverse", D("100.00"))
    [entry], _ = service.history(member.id, limit=1)
    assert entry.description == "Reversal of payment P1"
    assert outcome.record.reversal_entry_id == entry.id
    assert_ledger_ok()


def test_reversing_a_payment_twice_is_a_replay(ctx):
    member = rich_member()
    payment = pay(member.id, "100").record
    first = service.reverse_payment(payment.id, "S1", now=T0)

    again = service.reverse_payment(payment.id, "S1", now=T0 + timedelta(minutes=1))

    assert again.replayed is True
    assert again.record.reversal_entry_id == first.record.reversal_entry_id
    assert balances(member.id)[0] == D("500.00")
    assert [t for t, _ in entries(member.id)] == ["earn_purchase", "payment", "reverse"]
    assert_ledger_ok()


def test_a_reversed_payment_number_stays_taken(ctx):
    member = rich_member()
    payment = pay(member.id, "100").record
    service.reverse_payment(payment.id, "S1", now=T0)

    again = pay(member.id, "100")

    assert again.replayed is True and again.record.status == "reversed"
    assert balances(member.id)[0] == D("500.00")


def test_points_reversed_into_a_lot_that_expired_meanwhile_expire_again(ctx):
    use_rules(expiry_days=30)
    member = factories.member(now=T0)
    factories.purchase(member.id, "100.00", now=T0)  # expires at 2026-04-09 16:00 UTC
    payment = pay(member.id, "80").record
    factories.purchase(member.id, "5.00", now=utc(2026, 4, 10))  # expires the 20 left
    assert entries(member.id)[-2:] == [("expire", D("-20.00")), ("earn_purchase", D("5.00"))]

    service.reverse_payment(payment.id, "S1", now=utc(2026, 4, 11))

    assert entries(member.id)[-2:] == [("reverse", D("80.00")), ("expire", D("-80.00"))]
    assert lots(member.id)[0] == ("expired", D("100.00"), D("0.00"))
    assert balances(member.id)[0] == D("5.00")
    assert service.history(member.id)[0][0].balance_after == D("5.00")
    assert_ledger_ok()


def test_a_reversal_partly_into_an_expired_lot_keeps_the_unexpired_part(ctx):
    use_rules(expiry_days=30)
    member = factories.member(now=T0)
    factories.purchase(member.id, "50.00", now=T0)  # expires 2026-04-09 16:00 UTC
    use_rules(expiry_days=365)
    factories.purchase(member.id, "50.00", now=T0)
    payment = pay(member.id, "80").record  # 50 from the first lot, 30 from the second

    service.reverse_payment(payment.id, "S1", now=utc(2026, 4, 11))

    assert entries(member.id)[-2:] == [("reverse", D("80.00")), ("expire", D("-50.00"))]
    assert lots(member.id) == [("expired", D("50.00"), D("0.00")), ("available", D("50.00"), D("50.00"))]
    assert balances(member.id)[0] == D("50.00")
    assert_ledger_ok()


def test_a_reversal_while_in_debt_pays_the_debt_first(ctx):
    member = factories.member(now=T0)
    purchase = factories.purchase(member.id, "100.00", now=T0).record
    payment = pay(member.id, "100").record
    service.refund_purchase(purchase.id, "S1", "F1", D("100.00"), now=T0)
    assert balances(member.id)[3] == D("100.00")

    service.reverse_payment(payment.id, "S1", now=T0)

    assert balances(member.id) == (D("0.00"), D("0.00"), D("0.00"), D("0.00"))
    assert entries(member.id)[-1] == ("reverse", D("100.00"))
    assert_ledger_ok()


def test_a_reversal_at_another_store_is_forbidden(ctx):
    member = rich_member()
    payment = pay(member.id, "100", store_id="S1").record

    with pytest.raises(Forbidden):
        service.reverse_payment(payment.id, "S2", now=T0)

    assert balances(member.id)[0] == D("400.00")


def test_reversing_an_unknown_payment_is_not_found(ctx):
    with pytest.raises(NotFound):
        service.reverse_payment(999_999, "S1", now=T0)
    assert entry_count() == 0


def test_a_payment_spread_over_many_small_lots_records_where_each_point_came_from(ctx):
    member = factories.member(now=T0)
    for day in range(5):
        service.record_activity(member.id, "sign_in", f"d{day}", now=T0 + timedelta(days=day))
    factories.purchase(member.id, "0.50", now=T0 + timedelta(days=5))  # 3.00 points in 6 lots

    payment = pay(member.id, "3", now=T0 + timedelta(days=5)).record

    assert all(remaining == D("0.00") for _, _, remaining in lots(member.id))
    service.reverse_payment(payment.id, "S1", now=T0 + timedelta(days=6))
    assert [lot.remaining for lot in lot_rows(member.id)] == [D("0.50")] * 6
    assert_ledger_ok()
