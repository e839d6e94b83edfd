"""Points expire on the next write after their expiry (an `expire` entry), never spent once expired;
pending points become available on the next write after their return window."""
from datetime import timedelta

import pytest

from loyalty import clock
from loyalty.errors import InsufficientPoints
from loyalty.points import service
from tests import factories
from tests.factories import D
from tests.service.ledger_helpers import (T0, assert_ledger_ok, balances, entries, lot_rows, lots,
                                          use_rules, utc)

pytestmark = pytest.mark.usefixtures("ctx")

EXPIRY_30 = utc(2026, 4, 9, 16)  # a lot credited at T0 with 30 days: end of 9 April, local


def sign_in(member_id, now, event_id=None):
    return service.record_activity(member_id, "sign_in", event_id or now.isoformat(), now=now)


def test_a_lot_past_its_expiry_is_expired_on_the_next_write_with_an_expire_entry(ctx):
    use_rules(expiry_days=30)
    member = factories.member(now=T0)
    factories.purchase(member.id, "100.00", now=T0)
    lot = lot_rows(member.id)[0]
    assert lot.expires_at == EXPIRY_30

    sign_in(member.id, EXPIRY_30 - timedelta(seconds=1))
    assert balances(member.id)[0] == D("100.50")  # one second before: still there

    sign_in(member.id, EXPIRY_30)

    assert entries(member.id)[-2:] == [("expire", D("-100.00")), ("earn_activity", D("0.50"))]
    expire_entry = service.history(member.id, types=["expire"])[0][0]
    assert expire_entry.description == "Points expired"  # the amount is the entry's points
    assert expire_entry.reference == {"type": "lot", "id": str(lot.id)}
    assert expire_entry.balance_after == D("0.50")
    assert lots(member.id)[0] == ("expired", D("100.00"), D("0.00"))
    # The account keeps what it earned; only the balance drops.
    assert balances(member.id) == (D("1.00"), D("0.00"), D("101.00"), D("0.00"))
    assert_ledger_ok()


def test_expired_points_are_never_spent(ctx):
    use_rules(expiry_days=30)
    member = factories.member(now=T0)
    factories.purchase(member.id, "100.00", now=T0)

    with pytest.raises(InsufficientPoints) as refused:
        service.pay_with_points(member.id, "S1", "P1", D("100"), now=EXPIRY_30)

    assert refused.value.extra["available"] == D("0.00")
    assert_ledger_ok()


def test_only_what_is_left_of_a_partly_spent_lot_expires(ctx):
    use_rules(expiry_days=30)
    member = factories.member(now=T0)
    factories.purchase(member.id, "100.00", now=T0)
    service.pay_with_points(member.id, "S1", "P1", D("70"), now=T0)

    factories.purchase(member.id, "10.00", now=EXPIRY_30 + timedelta(days=1))

    assert entries(member.id) == [("earn_purchase", D("100.00")), ("payment", D("-70.00")),
                                  ("expire", D("-30.00")), ("earn_purchase", D("10.00"))]
    assert balances(member.id)[0] == D("10.00")
    assert_ledger_ok()


def test_each_expired_lot_gets_its_own_entry_and_unexpired_lots_stay(ctx):
    use_rules(expiry_days=30)
    member = factories.member(now=T0)
    factories.purchase(member.id, "10.00", now=T0)
    factories.purchase(member.id, "20.00", now=T0 + timedelta(hours=1))
    factories.purchase(member.id, "40.00", now=T0 + timedelta(days=1))  # expires a day later

    sign_in(member.id, EXPIRY_30)

    assert [e for e in entries(member.id) if e[0] == "expire"] == [
        ("expire", D("-10.00")), ("expire", D("-20.00"))]
    assert balances(member.id)[0] == D("40.50")
    assert [status for status, _, _ in lots(member.id)] == ["expired", "expired", "available", "available"]
    assert_ledger_ok()


def test_an_expired_lot_is_expired_once(ctx):
    use_rules(expiry_days=30)
    member = factories.member(now=T0)
    factories.purchase(member.id, "10.00", now=T0)

    for day in range(3):
        sign_in(member.id, EXPIRY_30 + timedelta(days=day))

    assert [e for e in entries(member.id) if e[0] == "expire"] == [("expire", D("-10.00"))]
    assert balances(member.id)[0] == D("1.50")
    assert_ledger_ok()


def test_end_of_month_points_expire_at_local_midnight_on_the_last_day(ctx):
    use_rules(expiry_policy="end_of_month")
    member = factories.member(now=T0)
    factories.purchase(member.id, "100.00", now=T0)
    assert lot_rows(member.id)[0].expires_at == utc(2026, 3, 31, 16)  # 1 April 00:00 local

    service.pay_with_points(member.id, "S1", "P1", D("10"), now=utc(2026, 3, 31, 15, 59))
    assert balances(member.id)[0] == D("90.00")

    sign_in(member.id, utc(2026, 3, 31, 16, 0))

    assert entries(member.id)[-2:] == [("expire", D("-90.00")), ("earn_activity", D("0.50"))]
    assert lot_rows(member.id)[-1].expires_at == utc(2026, 4, 30, 16)  # April's sign-in: end of April
    assert balances(member.id)[0] == D("0.50")
    assert_ledger_ok()


def test_end_of_year_points_expire_at_local_midnight_on_new_years_eve(ctx):
    use_rules(expiry_policy="end_of_year")
    member = factories.member(now=T0)
    factories.purchase(member.id, "100.00", now=T0)
    assert lot_rows(member.id)[0].expires_at == utc(2026, 12, 31, 16)

    sign_in(member.id, utc(2026, 12, 31, 15, 59))
    assert balances(member.id)[0] == D("100.50")

    sign_in(member.id, utc(2026, 12, 31, 16, 0))

    # Both 2026 lots expire (the late sign-in was on 31 December, local); 2027's stays.
    assert [e for e in entries(member.id) if e[0] == "expire"] == [
        ("expire", D("-100.00")), ("expire", D("-0.50"))]
    assert balances(member.id)[0] == D("0.50")
    assert lot_rows(member.id)[-1].expires_at == utc(2027, 12, 31, 16)
    assert_ledger_ok()


def test_points_under_the_never_policy_do_not_expire(ctx):
    use_rules(expiry_policy="never")
    member = factories.member(now=T0)
    factories.purchase(member.id, "100.00", now=T0)

    sign_in(member.id, T0 + timedelta(days=3650))

    assert lot_rows(member.id)[0].expires_at is None
    assert "expire" not in [t for t, _ in entries(member.id)]
    assert balances(member.id)[0] == D("100.50")
    assert service.points_summary(member.id, now=T0 + timedelta(days=3650))["expiring"] == []
    assert_ledger_ok()


def test_a_change_of_policy_applies_to_new_points_only(ctx):
    use_rules(expiry_days=30)
    member = factories.member(now=T0)
    factories.purchase(member.id, "100.00", now=T0)
    use_rules(expiry_policy="never")
    factories.purchase(member.id, "50.00", now=T0)

    sign_in(member.id, EXPIRY_30)

    assert [lot.expires_at for lot in lot_rows(member.id)] == [EXPIRY_30, None, None]
    assert balances(member.id)[0] == D("50.50")
    assert_ledger_ok()


def test_the_summary_lists_what_expires_when_earliest_first(ctx):
    member = factories.member(now=T0)
    use_rules(expiry_days=365)
    factories.purchase(member.id, "100.00", now=T0)
    factories.purchase(member.id, "20.00", now=T0 + timedelta(hours=2))  # the same local day
    use_rules(expiry_days=30)
    factories.purchase(member.id, "5.00", now=T0)

    summary = service.points_summary(member.id, now=T0 + timedelta(hours=2))

    assert summary["expiring"] == [{"points": D("5.00"), "expires_at": EXPIRY_30},
                                   {"points": D("120.00"), "expires_at": utc(2027, 3, 10, 16)}]
    assert summary["available"] == D("125.00")


def test_pending_points_released_and_expired_in_one_write(ctx):
    use_rules(pending_days=7, expiry_days=30)
    member = factories.member(now=T0)
    factories.purchase(member.id, "100.00", now=T0)
    expires = lot_rows(member.id)[0].expires_at
    assert expires == utc(2026, 4, 16, 16)  # 30 days after 17 March, when it becomes available

    factories.purchase(member.id, "1.00", now=expires)

    assert lots(member.id)[0] == ("expired", D("100.00"), D("0.00"))
    assert entries(member.id) == [("earn_purchase", D("100.00")), ("expire", D("-100.00")),
                                  ("earn_purchase", D("1.00"))]
    assert balances(member.id)[:2] == (D("0.00"), D("1.00"))
    assert_ledger_ok()


def test_pending_points_are_not_expired_and_not_spendable_while_pending(ctx):
    use_rules(pending_days=7)
    member = factories.member(now=T0)
    factories.purchase(member.id, "100.00", now=T0)

    with clock.frozen_at(T0 + timedelta(days=6)):
        with pytest.raises(InsufficientPoints):
            service.pay_with_points(member.id, "S1", "P1", D("100"))
        service.record_activity(member.id, "sign_in", "e1")

    assert balances(member.id)[:2] == (D("0.50"), D("100.00"))
    assert lots(member.id)[0] == ("pending", D("100.00"), D("100.00"))
    assert_ledger_ok()


def test_released_pending_points_are_spendable_in_the_same_write(ctx):
    use_rules(pending_days=7)
    member = factories.member(now=T0)
    factories.purchase(member.id, "100.00", now=T0)

    outcome = service.pay_with_points(member.id, "S1", "P1", D("100"), now=T0 + timedelta(days=7))

    assert outcome.record.points == D("100.00")
    assert balances(member.id) == (D("0.00"), D("0.00"), D("100.00"), D("0.00"))
    assert_ledger_ok()


def test_pending_points_pay_a_debt_when_they_become_available_even_if_settled_after_expiry(ctx):
    use_rules(pending_days=1, expiry_days=0)
    member = factories.member(now=T0)
    service.adjust_points(member.id, D("-10"), "correction", "admin", now=T0)  # 10 owed
    factories.purchase(member.id, "50.00", now=T0)  # available 11 March 12:00, expires that midnight

    # Nobody writes for this member until the points have expired.
    sign_in(member.id, utc(2026, 3, 13, 4))

    # The 50 paid the 10 owed the moment they became available; only 40 expired.
    assert balances(member.id) == (D("0.50"), D("0.00"), D("50.50"), D("0.00"))
    assert entries(member.id)[-2:] == [("expire", D("-40.00")), ("earn_activity", D("0.50"))]
    assert_ledger_ok()


def test_when_an_account_is_settled_does_not_change_what_it_holds(ctx):
    use_rules(pending_days=1, expiry_days=0)
    seen_often, seen_late = factories.member(now=T0), factories.member(now=T0)
    for member in (seen_often, seen_late):
        sign_in(member.id, T0, event_id="e1")
        service.adjust_points(member.id, D("-10.5"), "correction", "admin", now=T0)  # 10 owed
        factories.purchase(member.id, "50.00", now=T0)

    # The app re-sends the sign-in just after the 50 points are released: a replay that settles.
    assert sign_in(seen_often.id, utc(2026, 3, 11, 5), event_id="e1").replayed
    for member in (seen_often, seen_late):
        service.record_activity(member.id, "share", "s1", now=utc(2026, 3, 13, 4))

    assert balances(seen_often.id) == balances(seen_late.id) == (D("0.50"), D("0.00"), D("51.00"), D("0.00"))
    assert_ledger_ok()


def test_reading_the_points_shows_released_and_expired_lots_without_waiting_for_a_write(ctx):
    use_rules(pending_days=7, expiry_policy="days_after_available", expiry_days=30)
    member = factories.member(now=T0)
    factories.purchase(member.id, "100.00", now=T0)
    assert service.points_summary(member.id, now=T0)["pending"] == D("100.00")

    released = service.points_summary(member.id, now=T0 + timedelta(days=8))
    assert (released["available"], released["pending"]) == (D("100.00"), D("0.00"))
    assert [item["points"] for item in released["expiring"]] == [D("100.00")]

    expired = service.points_summary(member.id, now=T0 + timedelta(days=60))
    assert (expired["available"], expired["expiring"]) == (D("0.00"), [])
    # A read writes nothing: the lot is released and expired by the next write (or the nightly jobs),
    # and then the balances are what the read showed.
    assert ("expire", D("-100.00")) not in entries(member.id)
    assert_ledger_ok()
    service.record_activity(member.id, "share", "after-the-read", now=T0 + timedelta(days=60))
    assert entries(member.id)[-2] == ("expire", D("-100.00"))
    assert service.points_summary(member.id, now=T0 + timedelta(days=60))["available"] == \
        expired["available"] + entries(member.id)[-1][1]
    assert_ledger_ok()
