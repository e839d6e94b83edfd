"""An admin's manual corrections: credits become lots, debits take available points then go to debt."""
from datetime import timedelta

import pytest
import sqlalchemy as sa

from loyalty.audit import AuditEntry
from loyalty.errors import NotFound, ValidationFailed
from loyalty.extensions import db
from loyalty.points import service
from tests import factories
from tests.factories import D
from tests.service.ledger_helpers import (T0, assert_ledger_ok, balances, entries, entry_count,
                                          lot_rows, lots, use_rules, utc)

pytestmark = pytest.mark.usefixtures("ctx")


def adjust(member_id, points, reason="goodwill", now=T0):
    return service.adjust_points(member_id, D(points), reason, actor="admin:ops", now=now)


def audit_entries(action="points.adjust"):
    return db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == action)
                              .order_by(AuditEntry.id)).all()


def test_a_positive_adjustment_credits_points_that_expire_like_earned_ones(ctx):
    use_rules(expiry_days=30)
    member = factories.member(now=T0)

    entry = adjust(member.id, "25.50", reason="late delivery")

    assert (entry.type, entry.points, entry.balance_after) == ("adjust", D("25.50"), D("25.50"))
    assert entry.description == "Adjustment: late delivery"
    assert entry.expires_at == utc(2026, 4, 9, 16)
    assert lots(member.id) == [("available", D("25.50"), D("25.50"))]
    assert lot_rows(member.id)[0].expires_at == utc(2026, 4, 9, 16)
    assert balances(member.id)[:2] == (D("25.50"), D("0.00"))
    assert_ledger_ok()


def test_an_adjustment_is_recorded_in_the_audit_log(ctx):
    member = factories.member(now=T0)

    entry = adjust(member.id, "10", reason="store error")

    [record] = audit_entries()
    assert (record.actor, record.entity_type, record.entity_id) == ("admin:ops", "member", str(member.id))
    assert record.before == {"available": "0.00", "pending": "0.00", "debt": "0.00"}
    assert record.after == {"points": "10.00", "reason": "store error", "entry_id": entry.id,
                            "available": "10.00", "pending": "0.00", "debt": "0.00"}
    assert record.created_at == T0


def test_a_negative_adjustment_takes_available_points_earliest_expiring_first(ctx):
    member = factories.member(now=T0)
    use_rules(expiry_days=365)
    factories.purchase(member.id, "100.00", now=T0)
    use_rules(expiry_days=30)
    factories.purchase(member.id, "30.00", now=T0)

    entry = adjust(member.id, "-40", reason="duplicate credit")

    assert (entry.type, entry.points, entry.balance_after) == ("adjust", D("-40.00"), D("90.00"))
    assert lots(member.id) == [("available", D("100.00"), D("90.00")), ("available", D("30.00"), D("0.00"))]
    assert balances(member.id) == (D("90.00"), D("0.00"), D("130.00"), D("0.00"))
    assert_ledger_ok()


def test_a_negative_adjustment_beyond_the_available_points_leaves_debt(ctx):
    member = factories.member(now=T0)
    factories.purchase(member.id, "30.00", now=T0)

    adjust(member.id, "-50", reason="fraudulent receipts")

    assert balances(member.id) == (D("-20.00"), D("0.00"), D("30.00"), D("20.00"))
    assert entries(member.id) == [("earn_purchase", D("30.00")), ("adjust", D("-50.00"))]
    # The next credit pays the debt first.
    adjust(member.id, "25", reason="apology", now=T0 + timedelta(days=1))
    assert balances(member.id)[0::3] == (D("5.00"), D("0.00"))
    assert_ledger_ok()


def test_a_negative_adjustment_leaves_pending_points_alone(ctx):
    use_rules(pending_days=7)
    member = factories.member(now=T0)
    factories.purchase(member.id, "100.00", now=T0)

    adjust(member.id, "-10", reason="correction")

    assert balances(member.id) == (D("-10.00"), D("100.00"), D("100.00"), D("10.00"))
    factories.purchase(member.id, "1.00", now=T0 + timedelta(days=7))
    assert balances(member.id)[:2] == (D("90.00"), D("1.00"))
    assert balances(member.id)[3] == D("0.00")
    assert_ledger_ok()


def test_an_adjustment_of_zero_is_refused(ctx):
    member = factories.member(now=T0)

    with pytest.raises(ValidationFailed) as refused:
        adjust(member.id, "0")

    assert refused.value.errors == {"points": ["Must not be 0."]}
    assert entry_count() == 0
    assert audit_entries() == []


def test_an_adjustment_finer_than_a_hundredth_of_a_point_is_refused(ctx):
    member = factories.member(now=T0)

    with pytest.raises(ValidationFailed) as refused:
        adjust(member.id, "0.005")

    assert refused.value.errors == {"points": ["Must have at most 2 decimal places."]}
    assert entry_count() == 0


def test_an_adjustment_for_an_unknown_member_is_not_found_and_not_audited(ctx):
    with pytest.raises(NotFound):
        adjust(999_999, "10")

    assert audit_entries() == []


def test_a_credit_that_would_take_an_account_past_its_largest_balance_is_refused(ctx):
    from loyalty.points.ledger import MAX_ACCOUNT_POINTS

    member = factories.member(now=T0)
    adjust(member.id, MAX_ACCOUNT_POINTS - D("1.00"))

    with pytest.raises(ValidationFailed) as refused:
        adjust(member.id, D("1.01"))
    with pytest.raises(ValidationFailed):
        factories.purchase(member.id, "2.00", now=T0)

    assert "the most an account holds" in refused.value.message
    assert balances(member.id)[0] == MAX_ACCOUNT_POINTS - D("1.00")
    adjust(member.id, D("1.00"))  # exactly the largest balance is fine
    assert balances(member.id)[0] == MAX_ACCOUNT_POINTS
    assert_ledger_ok()
