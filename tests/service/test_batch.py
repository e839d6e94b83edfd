"""An offline till's upload: each purchase once, independent items, in order, dated by occurred_at
within the offline limit, the same points as a single purchase, and all or nothing on a crash."""
import difflib
import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from loyalty.extensions import db
from loyalty.members.merge import merge_members
from loyalty.members.models import Member
from loyalty.points import batch, service
from loyalty.points.models import Entry, Lot, Purchase
from loyalty.tiers.models import TierChange
from loyalty.webhooks import service as webhooks
from loyalty.webhooks.models import Delivery, Event
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

    def killed(members, purchases, now):
        assert len(purchases) == 3  # the batch's rows are written; the worker dies before the commit
        raise SystemExit("worker killed")

    monkeypatch.setattr(batch.tiers, "upgrade_after_purchases", killed)
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


# --- tiers: the same moves as the purchases one by one, for all members at once -----------------

def tier_story(member_id):
    """A member's tier and its history as a user sees them: the receipts name the purchases."""
    member = db.session.get(Member, member_id, populate_existing=True)
    history = db.session.execute(
        sa.select(TierChange.from_code, TierChange.to_code, TierChange.reason, TierChange.note,
                  TierChange.created_at, Purchase.receipt_no)
        .outerjoin(Purchase, Purchase.id == TierChange.purchase_id)
        .where(TierChange.member_id == member_id).order_by(TierChange.id)).all()
    return (member.tier_code, member.tier_since, member.tier_held_until), [tuple(row) for row in history]


def tier_events():
    """The tier.changed events' data, by member, in the order written (their deliveries' order)."""
    found = {}
    for event in db.session.scalars(sa.select(Event).join(Delivery, Delivery.event_id == Event.id)
                                    .where(Event.type == "tier.changed").order_by(Delivery.id)):
        data = json.loads(event.body)["data"]
        found.setdefault(data["member_id"], []).append((data["from"], data["to"], data["reason"], data["note"]))
    return found


def test_a_batch_moves_tiers_exactly_as_the_same_purchases_sent_one_by_one(ctx):
    webhooks.create_subscription({"url": "https://crm.example/hooks", "events": ["tier.changed"],
                                  "secret": "s3cret-of-sixteen-chars"}, actor="admin test", now=T0)
    joined = T0 - timedelta(days=60)
    # (spend before the batch, the batch's amounts): silver then gold within the batch; silver on
    # the second purchase; nothing; silver on the first; silver before, straight to diamond;
    # gold before, not enough for diamond.
    stories = [(None, ["3000", "100", "8000"]), (None, ["1000", "2500"]), (None, ["100"]),
               ("2900", ["200", "50"]), ("4000", ["30000"]), ("11000", ["5000"])]

    def world(store_id):
        members = []
        for n, (before, _) in enumerate(stories):
            member = factories.member(now=joined)
            if before:
                factories.purchase(member.id, before, store_id=store_id, receipt_no=f"P{n}",
                                   now=T0 - timedelta(days=50))
            members.append(member.id)
        return members

    batched, single = world("S1"), world("S2")
    # The batch's order interleaves the members, as a till's day would.
    order = [(n, k, amount) for k in range(3) for n, (_, amounts) in enumerate(stories)
             for amount in amounts[k:k + 1]]
    results = upload([item(batched[n], f"B{n}-{k}", amount, occurred_at=T0 - timedelta(days=2, minutes=-k))
                      for n, k, amount in order])
    assert {r["status"] for r in results} == {"credited"}
    for n, k, amount in order:
        service.credit_purchase(single[n], "S2", f"B{n}-{k}", D(amount),
                                occurred_at=T0 - timedelta(days=2, minutes=-k), now=T0)

    # The receipts match: each history line names the same purchase in both worlds.
    assert [tier_story(m) for m in batched] == [tier_story(m) for m in single]
    assert [tier_story(m)[0][0] for m in batched] == ["gold", "silver", "ordinary", "silver", "diamond", "gold"]
    assert len(tier_story(batched[0])[1]) == 2  # ordinary → silver → gold: two lines, two purchases
    events = tier_events()
    assert [events.get(m) for m in batched] == [events.get(m) for m in single]
    assert sum(len(lines) for lines in events.values()) == 2 * (2 + 5)  # 2 before the batch, 5 in it
    assert_ledger_ok()


def test_a_refund_of_the_purchase_that_crossed_a_threshold_in_a_batch_undoes_its_upgrade(ctx):
    member = factories.member(now=T0 - timedelta(days=60))
    results = upload([item(member.id, "R1", "100"), item(member.id, "R2", "3000")])
    assert tier_story(member.id)[0][0] == "silver"

    service.refund_purchase(results[1]["purchase_id"], "S1", "F1", D("3000"), now=T0 + timedelta(hours=1))

    assert tier_story(member.id)[0][0] == "ordinary"


def count_statements(work):
    statements = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        work()
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)
    return statements


def test_a_batchs_statements_do_not_grow_with_its_members(ctx):
    """Each member crosses a threshold in the batch: 2 members or 40, the same statements."""
    def batch_of(members, tag):
        ids = [factories.member(now=T0 - timedelta(days=60)).id for _ in range(members)]
        items = [item(ids[n % members], f"{tag}{n}", "3000") for n in range(40)]
        statements = count_statements(lambda: upload(items))
        assert {tier_story(member_id)[0][0] for member_id in ids} == {"diamond" if members == 2 else "silver"}
        return statements

    upload([item(factories.member(now=T0).id, "W1", "1")])  # the settings the batch reads are cached now
    few, many = batch_of(2, "F"), batch_of(40, "M")

    assert len(many) == len(few), "\n".join(difflib.unified_diff(few, many, lineterm=""))


# --- cards ------------------------------------------------------------------------------------------

def test_cards_in_a_batch_find_their_members_merged_ones_the_survivor_and_unknown_ones_are_rejected(ctx):
    a, b = factories.member(now=T0 - timedelta(days=60)), factories.member(now=T0 - timedelta(days=60))
    gone = factories.member(now=T0 - timedelta(days=60))
    gone_card = gone.card_token
    merge_members(b.id, gone.id, actor="test", now=T0 - timedelta(days=1))

    results = upload([{**item(None, "R1", "10"), "card": a.card_token}, {**item(None, "R2", "20"), "card": "nobody"},
                      {**item(None, "R3", "30"), "card": gone_card}, item(a.id, "R4", "40")])

    assert statuses(results) == [("R1", "credited"), ("R2", "rejected"), ("R3", "credited"), ("R4", "credited")]
    assert results[1]["error"] == {"error": "not_found",
                                   "message": "No member has this card; scan the member's card QR again."}
    assert balances(a.id)[0] == D("50.00") and balances(b.id)[0] == D("30.00")


def test_a_batchs_cards_are_found_in_one_query(ctx):
    def statements_for(count, tag):
        cards = [factories.member(now=T0 - timedelta(days=60)).card_token for _ in range(count)]
        items = [{**item(None, f"{tag}{n}", "10"), "card": card} for n, card in enumerate(cards)]
        found = [s for s in count_statements(lambda: upload(items)) if "card_token IN" in s]
        return len(found)

    assert statements_for(2, "F") == statements_for(30, "M") == 1
