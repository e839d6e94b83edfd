"""A plain purchase in one statement (points/plain_purchase.py) writes exactly what the ORM way
writes: each scenario runs twice from a fresh programme, once as it would (one statement where the
purchase is plain) and once with the one-statement way turned off, and every row it touched is the
same, ids included."""
import json
from datetime import date, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from loyalty.api.schemas.points import PurchaseResultSchema
from loyalty.extensions import db
from loyalty.points import holds, plain_purchase
from loyalty.points import service as points
from loyalty.promotions import service as promotions
from loyalty.referrals import service as referrals
from loyalty.segments import figures
from loyalty.tiers import service as tiers
from loyalty.webhooks import service as webhooks
from tests import factories
from tests.conftest import fresh_programme
from tests.factories import D
from tests.service.ledger_helpers import T0, assert_ledger_ok, use_rules

pytestmark = [pytest.mark.usefixtures("ctx"), pytest.mark.postgres_only]

TABLES = {  # what a purchase writes, and how a table's rows are ordered
    "purchases": "id", "ledger_entries": "id", "lots": "id", "accounts": "member_id", "tier_changes": "id",
    "points_holds": "id", "hold_allocations": "id", "promotions": "id", "promotion_grants": "id", "referrals": "id",
}


def everything_written():
    rows = {table: [dict(row._mapping) for row in db.session.execute(
        sa.text(f"SELECT * FROM {table} ORDER BY {order}"))] for table, order in TABLES.items()}
    rows["members"] = [tuple(row) for row in db.session.execute(sa.text(
        "SELECT id, tier_code, tier_since, tier_held_until, updated_at FROM members ORDER BY id"))]
    # A webhook event's id is random: its body without it, and who gets it.
    rows["events"] = [(type_, {key: value for key, value in json.loads(body).items() if key != "id"})
                      for type_, body in db.session.execute(sa.text("SELECT type, body FROM webhook_events ORDER BY created_at, type, body"))]
    rows["deliveries"] = db.session.execute(sa.text(
        "SELECT subscription_id, count(*) FROM webhook_deliveries GROUP BY subscription_id")).all()
    return rows


def purchase(*args, **kwargs):
    """factories.purchase in a session of its own, as a request's is: one holding the member's ORM
    objects takes the ORM's lock (plain_purchase.lock)."""
    db.session.remove()
    return factories.purchase(*args, **kwargs)


def answer(outcome):
    purchase = outcome.record
    return (purchase.id, purchase.total_points, purchase.lines, purchase.lot.status if purchase.lot else None,
            purchase.available_at, outcome.member.tier_code, outcome.member.account.available,
            outcome.member.account.pending, outcome.replayed, dumped(outcome))


def dumped(outcome):
    """The whole answer as the API shows it, but for what the factories make differently in each run
    (a member's name and phone count up across the session; referral codes are random)."""
    answer = PurchaseResultSchema().dump(outcome)
    return {**answer, "member": {key: value for key, value in answer["member"].items()
                                 if key not in ("name", "phone", "referral_code")}}


def assert_same(plain, orm):
    assert plain[0] == orm[0]  # the answers
    for table in plain[1]:
        assert len(plain[1][table]) == len(orm[1][table]), table
        for one, other in zip(plain[1][table], orm[1][table]):
            if isinstance(one, dict):
                assert {key: value for key, value in one.items() if other[key] != value} == \
                    {key: value for key, value in other.items() if one[key] != value}, table
            else:
                assert one == other, table


def run_both_ways(scenario, monkeypatch):
    """The scenario's answers and rows, with the one-statement way on, then off; and how many of its
    purchases went the one-statement way."""
    taken = []
    real_credit = plain_purchase.credit

    def counted(*args, **kwargs):
        taken.append(1)
        return real_credit(*args, **kwargs)

    monkeypatch.setattr(plain_purchase, "credit", counted)
    results = []
    for plain in (True, False):
        fresh_programme()
        if not plain:
            monkeypatch.setattr(plain_purchase, "applies", lambda *args: False)
        answers = scenario()
        db.session.remove()
        assert_ledger_ok()
        assert figures.disagreements() == []  # the report triggers' running sums, fired by each statement
        results.append((answers, everything_written()))
        db.session.remove()  # its reads' transaction ends: the next TRUNCATE would wait for it
    return results, len(taken)


def test_purchases_available_at_once_and_a_replay(monkeypatch):
    def scenario():
        member = factories.member(now=T0, email="two.ids@shop.example", birthday=date(1990, 5, 1), channel="wechat",
                                  external_ids=[{"channel": "wechat", "id": "wx-1"}, {"channel": "alipay", "id": "ap-1"}])
        return [answer(purchase(member.id, amount, receipt_no=receipt, now=T0 + timedelta(minutes=i),
                                          items=items, channel=channel))
                for i, (amount, receipt, items, channel) in enumerate([
                    ("199.00", "R1", None, None),
                    ("0.50", "R2", [{"sku": "A", "category": "food", "amount": D("0.50")}], "online"),
                    ("88.88", "R3", None, "mini_program"),
                    # The till's retry, last: the one statement draws a lot's id before it meets the
                    # receipt, so lots numbered after a replay would differ by the one it left unused.
                    ("199.00", "R1", None, None)])]

    (plain, orm), taken = run_both_ways(scenario, monkeypatch)
    assert taken == 4
    assert_same(plain, orm)
    assert plain[0][0][8] is False and plain[0][3][8] is True and plain[0][3][0] == plain[0][0][0]
    assert len(plain[1]["purchases"]) == 3


def test_a_pending_purchase_with_points_held_and_a_webhook_subscriber(monkeypatch):
    def scenario():
        webhooks.create_subscription({"url": "https://hooks.example/loyalty", "events": ["points.credited"],
                                      "secret": "s" * 32}, actor="admin test", now=T0)
        member = factories.member(now=T0)
        factories.purchase(member.id, "100.00", receipt_no="R0", now=T0)
        holds.place_hold(member.id, "S1", "H1", D("30.00"), now=T0)
        use_rules(pending_days=7)
        # The hold is open at the first purchase; by the second it has lapsed, and taking the account's
        # lock lets it go (written before the one statement, its balances counted).
        return [answer(purchase(member.id, amount, receipt_no=receipt, now=T0 + after))
                for amount, receipt, after in [("55.55", "R1", timedelta(minutes=5)), ("1.00", "R2", timedelta(hours=1))]]

    (plain, orm), taken = run_both_ways(scenario, monkeypatch)
    assert taken == 3
    assert_same(plain, orm)
    assert [a[3] for a in plain[0]] == ["pending", "pending"]
    assert [(e["balance_after"], e["points"]) for e in plain[1]["ledger_entries"]] == [
        (10000, 10000), (15555, 5555), (15655, 100)]  # hundredths: 30 of the first 100 held meanwhile
    assert [h["status"] for h in plain[1]["points_holds"]] == ["expired"]
    assert len(plain[1]["events"]) == 3


def test_a_purchase_that_reaches_a_higher_tier(monkeypatch):
    def scenario():
        member = factories.member(now=T0 - timedelta(days=800))
        # Recorded now, made before the tier window (12 months): it counts for nothing.
        old = [answer(purchase(member.id, "9000.00", receipt_no="OLD", now=T0,
                                         occurred_at=T0 - timedelta(days=400)))]
        points.record_activity(member.id, "sign_in", "E1", now=T0)
        return old + [answer(purchase(member.id, amount, receipt_no=f"R{i}", now=T0 + timedelta(days=i)))
                      for i, amount in enumerate(["2999.99", "0.01", "20000.00"])]

    (plain, orm), taken = run_both_ways(scenario, monkeypatch)
    assert taken == 4
    assert_same(plain, orm)
    assert [a[5] for a in plain[0]] == ["ordinary", "ordinary", "silver", "gold"]
    assert [(c["from_code"], c["to_code"]) for c in plain[1]["tier_changes"]] == [
        ("ordinary", "silver"), ("silver", "gold")]


def test_promotions_in_force_and_a_referred_member(monkeypatch):
    """A promotion that awards nothing to a purchase leaves it plain; one that awards sends it the ORM
    way (budget and all), as does the first purchase of a member who joined through a referral (it
    settles the referral); their next one is plain again."""
    def scenario():
        long_ago = datetime(2020, 1, 1, tzinfo=timezone.utc)
        promotions.create_promotion({"name": "Big baskets", "status": "active", "starts_at": long_ago,
                                     "scope": {"min_amount": D("500.00")}, "limits": {"budget_points": D("1000")},
                                     "effect": {"type": "bonus", "points": D("30")}}, actor="test", now=T0)
        referrals.create_campaign({"name": "Bring a friend", "starts_at": T0 - timedelta(days=10), "ends_at": None,
                                   "referrer_points": D(100), "referee_points": D(50),
                                   "min_first_purchase": D("100.00"), "qualify_within_days": 30,
                                   "link_template": "https://shop.example/join?ref={code}"},
                                  actor="test", now=T0 - timedelta(days=10))
        member = factories.member(now=T0)
        referrer = factories.member(now=T0)
        referee = factories.member(referral_code=referrer.referral_code, now=T0)
        return [answer(purchase(member_id, amount, receipt_no=receipt, now=T0))
                for member_id, amount, receipt in [(member.id, "499.99", "R1"), (member.id, "500.00", "R2"),
                                                   (referee.id, "120.00", "R3"), (referee.id, "10.00", "R4"),
                                                   (referrer.id, "10.00", "R5")]]

    (plain, orm), taken = run_both_ways(scenario, monkeypatch)
    assert taken == 3  # R1, R4 and R5
    assert_same(plain, orm)
    assert [line["source"] for line in plain[0][1][2]] == ["base", "promotion"]
    assert [row["budget_used"] for row in plain[1]["promotions"]] == [3000]  # hundredths
    assert [line["source"] for line in plain[0][2][2]] == ["base", "referral"]


def test_a_purchase_with_a_debt_to_pay_goes_the_orm_way(monkeypatch):
    """Not plain: its points pay the member's debt first (a refund took back points already spent)."""
    from loyalty.points import service

    def scenario():
        member = factories.member(now=T0)
        bought = factories.purchase(member.id, "100.00", receipt_no="R1", now=T0).record
        service.pay_with_points(member.id, "S1", "P1", D("80.00"), now=T0)
        service.refund_purchase(bought.id, "S1", "F1", D("100.00"), now=T0)
        return [answer(purchase(member.id, "50.00", receipt_no="R2", now=T0))]

    (plain, orm), taken = run_both_ways(scenario, monkeypatch)
    assert taken == 1  # the first purchase only
    assert_same(plain, orm)
    assert plain[1]["accounts"][0]["debt"] == 3000  # 80 - 50 points still owed, in hundredths


def test_a_failure_after_the_statement_leaves_nothing_written(monkeypatch):
    member = factories.member(now=T0)
    purchase(member.id, "10.00", receipt_no="R1", now=T0)
    before = everything_written()
    db.session.remove()

    def broken(*args, **kwargs):
        raise RuntimeError("the tier check failed")

    monkeypatch.setattr(tiers, "upgrade_if_qualified", broken)
    with pytest.raises(RuntimeError):
        purchase(member.id, "20.00", receipt_no="R2", now=T0)
    db.session.remove()
    assert everything_written() == before
    monkeypatch.undo()
    assert answer(purchase(member.id, "20.00", receipt_no="R2", now=T0))[6] == D("30.00")
    assert_ledger_ok()


def test_the_lock_reads_plain_values_unless_the_orm_has_work_to_do(monkeypatch):
    """A request's purchase locks the account as plain values; a session holding the member's ORM
    objects, or an account with lots falling due (settling is the ORM's), takes the ORM's lock."""
    from loyalty.members.models import Member
    from loyalty.points.models import Account, Lot

    locked = []
    real_credit = plain_purchase.credit

    def noted(account, *args, **kwargs):
        locked.append(type(account))
        return real_credit(account, *args, **kwargs)

    monkeypatch.setattr(plain_purchase, "credit", noted)
    use_rules(pending_days=7)
    member = factories.member(now=T0)
    first = purchase(member.id, "10.00", receipt_no="R1", now=T0)
    held = db.session.get(Member, member.id)  # the session now holds the member (while referred to)
    second = factories.purchase(member.id, "20.00", receipt_no="R2", now=T0)
    assert held.account.pending == D("30.00")
    third = purchase(member.id, "5.00", receipt_no="R3", now=T0 + timedelta(days=8))  # R1 and R2 fall due
    assert locked == [plain_purchase.LockedAccount, Account, Account]
    assert [(a.member.account.available, a.member.account.pending) for a in (first, second, third)] == [
        (D("0.00"), D("10.00")), (D("0.00"), D("30.00")), (D("30.00"), D("5.00"))]
    assert [lot.status for lot in db.session.scalars(sa.select(Lot).order_by(Lot.id))] == \
        ["available", "available", "pending"]
    assert_ledger_ok()
