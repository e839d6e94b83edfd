"""An offline till's upload: each purchase once, independent items, in order, dated by occurred_at
within the offline limit, the same points as a single purchase, and all or nothing on a crash."""
from datetime import timedelta

import pytest
import sqlalchemy as sa

from loyalty.extensions import db
from loyalty.points import batch, service
from loyalty.points.models import Entry, Lot, Purchase
from tests import factories
from tests.factories import D
from tests.service.ledger_helpers import T0, assert_ledger_ok, balances, lots, use_rules

pytestmark = pytest.mark.usefixtures("ctx")


def item(member_id, receipt_no, amount, occurred_at=None, **extra):
    return {"member_id": member_id, "receipt_no": receipt_no, "amount": D(amount),
            "occurred_at": occurred_at or T0 - timedelta(hours=1), **extra}


def upload(items, store_id="S1", now=T0):
    return batch.credit_batch(store_id, items, now=now)


def statuses(results):
    return [(r["receipt_no"], r["status"]) for r in results]


def test_good_and_bad_items_each_get_their_answer_in_order(ctx):
    a, b = factories.member(now=T0 - timedelta(days=60)), factories.member(now=T0 - timedelta(days=60))

    results = upload([item(a.id, "R1", "100"), item(b.id, "R2", "-5"), item(999_999, "R3", "10"),
                      item(b.id, "R4", "20.50"), {"receipt_no": "R5", "error": {"error": "validation_error",
                                                                               "message": "bad"}}])

    assert statuses(results) == [("R1", "credited"), ("R2", "rejected"), ("R3", "rejected"),
                                 ("R4", "credited"), ("R5", "rejected")]
    assert results[0]["points_earned"] == D("100.00") and results[3]["points_earned"] == D("20.50")
    assert results[1]["error"]["error"] == "validation_error"
    assert results[2]["error"] == {"error": "not_found", "message": "No member with id 999999."}
    assert balances(a.id)[0] == D("100.00") and balances(b.id)[0] == D("20.50")
    assert_ledger_ok()


def test_a_batch_sent_again_is_replayed_and_credits_nothing_more(ctx):
    member = factories.member(now=T0 - timedelta(days=60))
    items = [item(member.id, f"R{n}", "10") for n in range(5)]
    first = upload(items)
    entries_before = db.session.scalar(sa.select(sa.func.count()).select_from(Entry))

    again = upload(items, now=T0 + timedelta(minutes=3))

    assert [r["status"] for r in again] == ["replayed"] * 5
    assert [r["purchase_id"] for r in again] == [r["purchase_id"] for r in first]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Entry)) == entries_before
    assert balances(member.id)[0] == D("50.00")
    assert_ledger_ok()


def test_batches_and_single_purchases_share_one_receipt_space(ctx):
    member = factories.member(now=T0 - timedelta(days=60))
    single = factories.purchase(member.id, "30", receipt_no="R1", now=T0 - timedelta(minutes=10)).record

    results = upload([item(member.id, "R1", "30"), item(member.id, "R2", "40"), item(member.id, "R1x", "5")])
    assert statuses(results) == [("R1", "replayed"), ("R2", "credited"), ("R1x", "credited")]
    assert results[0]["purchase_id"] == single.id
    replay = factories.purchase(member.id, "40", receipt_no="R2", now=T0 + timedelta(minutes=1))
    assert replay.replayed is True and replay.record.id == results[1]["purchase_id"]
    conflict = upload([item(member.id, "R2", "41")])
    assert conflict[0]["status"] == "rejected" and conflict[0]["error"]["error"] == "conflict"
    assert balances(member.id)[0] == D("75.00")
    assert_ledger_ok()


def test_the_same_receipt_twice_in_one_batch_counts_once(ctx):
    member = factories.member(now=T0 - timedelta(days=60))
    results = upload([item(member.id, "R1", "10"), item(member.id, "R1", "10"), item(member.id, "R1", "11")])
    assert statuses(results) == [("R1", "credited"), ("R1", "replayed"), ("R1", "rejected")]
    assert results[1]["purchase_id"] == results[0]["purchase_id"]
    assert balances(member.id)[0] == D("10.00")


def test_purchases_may_be_dated_at_most_the_offline_limit_back(ctx, app):
    member = factories.member(now=T0 - timedelta(days=90))
    results = upload([item(member.id, "OLD", "10", occurred_at=T0 - timedelta(days=30, minutes=1)),
                      item(member.id, "OK", "10", occurred_at=T0 - timedelta(days=29, hours=23)),
                      item(member.id, "FUTURE", "10", occurred_at=T0 + timedelta(minutes=6))])
    assert statuses(results) == [("OLD", "rejected"), ("OK", "credited"), ("FUTURE", "rejected")]
    assert "30 days" in results[0]["error"]["message"]
    app.config["LOYALTY_OFFLINE_MAX_DAYS"] = 40
    assert upload([item(member.id, "OLD", "10", occurred_at=T0 - timedelta(days=30, minutes=1))])[0]["status"] \
        == "credited"


def test_points_pending_and_expiry_count_from_occurred_at_like_a_single_purchase(ctx):
    use_rules(pending_days=7, expiry_policy="days_after_available", expiry_days=30)
    member = factories.member(now=T0 - timedelta(days=60))
    twin = factories.member(now=T0 - timedelta(days=60))
    old, recent = T0 - timedelta(days=10), T0 - timedelta(days=2)
    cart = [{"sku": "A", "quantity": 1, "amount": D("80.00")}]

    results = upload([item(member.id, "R1", "99.99", occurred_at=old),
                      item(member.id, "R2", "100", occurred_at=recent, items=cart)])
    single = [service.credit_purchase(twin.id, "S1", "T1", D("99.99"), occurred_at=old, now=T0).record,
              service.credit_purchase(twin.id, "S1", "T2", D("100"), occurred_at=recent, items=cart, now=T0).record]

    assert [r["points_earned"] for r in results] == [p.points_earned for p in single]
    batch_rows = db.session.scalars(sa.select(Purchase).where(Purchase.member_id == member.id)
                                    .order_by(Purchase.id)).all()
    assert [(p.available_at, p.eligible_amount) for p in batch_rows] == [(p.available_at, p.eligible_amount)
                                                                         for p in single]
    assert lots(member.id) == lots(twin.id)
    assert [lot.expires_at for lot in db.session.scalars(sa.select(Lot).where(Lot.member_id == member.id))] == \
        [lot.expires_at for lot in db.session.scalars(sa.select(Lot).where(Lot.member_id == twin.id))]
    assert balances(member.id) == balances(twin.id)
    assert_ledger_ok()


def test_the_tier_multiplier_is_the_members_tier_now(ctx):
    member = factories.member(now=T0 - timedelta(days=60))
    factories.purchase(member.id, "20000", now=T0 - timedelta(days=40))  # reaches a higher tier
    twin = factories.member(now=T0 - timedelta(days=60))
    factories.purchase(twin.id, "20000", now=T0 - timedelta(days=40))

    results = upload([item(member.id, "R1", "100", occurred_at=T0 - timedelta(days=20))])
    single = service.credit_purchase(twin.id, "S1", "T1", D("100"), occurred_at=T0 - timedelta(days=20), now=T0)

    assert results[0]["points_earned"] == single.record.points_earned > D("100")


def test_a_batch_pays_a_debt_first_like_a_single_purchase(ctx):
    member = factories.member(now=T0 - timedelta(days=60))
    bought = factories.purchase(member.id, "100", now=T0 - timedelta(days=1)).record
    service.pay_with_points(member.id, "S1", "P1", D("100"), now=T0 - timedelta(days=1))
    service.refund_purchase(bought.id, "S1", "F1", D("100"), now=T0 - timedelta(hours=2))
    assert balances(member.id)[3] == D("100.00")

    upload([item(member.id, "R1", "60"), item(member.id, "R2", "70")])

    assert balances(member.id)[0] == D("30.00") and balances(member.id)[3] == 0
    assert_ledger_ok()


def test_a_worker_killed_mid_batch_leaves_every_item_uncredited(ctx, monkeypatch):
    members = [factories.member(now=T0 - timedelta(days=60)) for _ in range(3)]
    items = [item(m.id, f"R{n}", "10") for n, m in enumerate(members)]
    calls = []

    def killed(member, now, purchase=None):
        calls.append(member.id)
        if len(calls) == 2:  # the batch's rows are written; the worker dies before the commit
            raise SystemExit("worker killed")

    monkeypatch.setattr(batch.tiers, "upgrade_if_qualified", killed)
    with pytest.raises(SystemExit):
        upload(items)
    db.session.rollback()

    assert db.session.scalar(sa.select(sa.func.count()).select_from(Purchase)) == 0
    assert [balances(m.id)[0] for m in members] == [0, 0, 0]
    assert_ledger_ok()
    monkeypatch.undo()
    assert [r["status"] for r in upload(items)] == ["credited"] * 3
    assert [balances(m.id)[0] for m in members] == [D("10.00")] * 3
    assert_ledger_ok()


def test_more_than_five_hundred_are_refused_whole(ctx):
    member = factories.member(now=T0 - timedelta(days=60))
    with pytest.raises(Exception) as refused:
        upload([item(member.id, f"R{n}", "1") for n in range(501)])
    assert refused.value.code == "validation_error"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Purchase)) == 0
