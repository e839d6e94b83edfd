"""Promotions in an offline till's batch (POST /purchases/batch): each item gets what the same
purchase sent alone gets, line by line, at its occurred_at; per-member limits count within the batch;
budgets are never exceeded, batches and single purchases racing; refunds take the points back."""
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, assume, example, given, settings
from hypothesis import strategies as st

from loyalty.extensions import db
from loyalty.points import batch
from loyalty.points import service as points
from loyalty.points.models import Entry, Purchase
from loyalty.points.verify import broken_accounts
from loyalty.promotions import service as promotions
from loyalty.promotions.models import Promotion, PromotionGrant
from loyalty.segments import service as segments
from loyalty.tiers import service as tiers
from tests import factories
from tests.conftest import fresh_programme
from tests.service.ledger_helpers import T0, balances
from tests.service.test_concurrency import assert_ledger_exact, on_both_databases, post, race, read, setup

D = Decimal
UTC = timezone.utc
LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)


def promotion(**fields):
    values = {"name": "Double points", "status": "active", "starts_at": LONG_AGO,
              "effect": {"type": "multiplier", "value": D("2")}, **fields}
    return promotions.create_promotion(values, actor="test", now=LONG_AGO)


def item(member_id, receipt_no, amount, occurred_at=None, **extra):
    return {"member_id": member_id, "receipt_no": receipt_no, "amount": D(amount),
            "occurred_at": occurred_at or T0 - timedelta(hours=1), **extra}


def lines(breakdown):
    return [(line["source"], line.get("promotion_id"), line["name"], line["points"]) for line in breakdown]


def member(**fields):
    return factories.member(now=T0 - timedelta(days=60), **fields)


# --- the same as a single purchase ----------------------------------------------------------------

ITEM = st.fixed_dictionaries({
    "sku": st.sampled_from(["TEA", "COLA", "CAKE", "CIG"]),
    "category": st.sampled_from(["beverage", "bakery", "tobacco"]),
    "quantity": st.just(1),
    "amount": st.decimals(min_value=D("0.01"), max_value=D("150.00"), places=2)})
PURCHASE = st.tuples(st.integers(0, 2), st.lists(ITEM, max_size=3),
                     st.decimals(min_value=D("0.00"), max_value=D("200.00"), places=2),
                     st.integers(0, 29 * 24))  # hours before T0: any local day and time of the last 30 days


@pytest.mark.usefixtures("ctx")
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          phases=[Phase.explicit, Phase.generate])  # shrinking takes minutes here: print the example instead
@given(purchases=st.lists(PURCHASE, min_size=1, max_size=8))
@example(purchases=[(0, [], D("1.00"), 0)])
def test_a_batch_item_earns_exactly_what_the_same_purchase_sent_alone_earns(app, purchases):
    """Two look-alike members per kind (same tier, same tags, no purchase yet): one sends the
    purchases one by one, the other in one batch, with the same `now`. Every line of every
    purchase is the same, per-member limits, first purchase, schedules and stacking included."""
    db.session.remove()
    fresh_programme()
    alone, batched = [], []
    for group in (alone, batched):
        group.extend(member() for _ in range(3))
        tiers.set_member_tier(group[1].id, "gold", "test", actor="test")
        segments.add_tags(group[2].id, ["vip"], actor="test")
    promotion(name="Drinks x3", effect={"type": "multiplier", "value": D("3")}, scope={"categories": ["beverage"]})
    promotion(name="5 per 100", effect={"type": "per_amount", "points": D("5"), "per": D("100.00")},
              limits={"per_member": 2, "per_member_period": "day"})
    promotion(name="Big basket", effect={"type": "bonus", "points": D("50")}, scope={"min_amount": D("200.00")},
              limits={"per_member": 1})
    promotion(name="Gold weekends", effect={"type": "multiplier", "value": D("1.5")}, stacking="exclusive",
              scope={"tiers": ["gold"]}, schedule={"days_of_week": [6, 7]}, priority=2)
    promotion(name="Evening bonus", effect={"type": "bonus", "points": D("8")},
              schedule={"from": "18:00", "until": "02:00"})
    promotion(name="VIP welcome", effect={"type": "bonus", "points": D("30")},
              scope={"tags": ["vip"], "first_purchase_only": True})
    promotion(name="First purchase", effect={"type": "bonus", "points": D("11")}, scope={"first_purchase_only": True})
    promotion(name="Other store", effect={"type": "bonus", "points": D("99")}, scope={"stores": ["S2"]})
    promotion(name="Ended", effect={"type": "bonus", "points": D("7")}, ends_at=T0 - timedelta(days=10))
    promotion(name="Draft", status="draft", effect={"type": "bonus", "points": D("1000")})
    sent = []
    for n, (who, items, extra, hours) in enumerate(purchases):
        amount = sum((i["amount"] for i in items), D("0.00")) + extra
        if amount > 0:
            sent.append((who, f"H{n}", amount, items, T0 - timedelta(hours=hours)))

    assume(sent)
    singles = [points.credit_purchase(alone[who].id, "S1", receipt_no, amount, occurred_at=occurred_at,
                                      items=items or None, now=T0).record
               for who, receipt_no, amount, items, occurred_at in sent]
    results = batch.credit_batch("S1", [item(batched[who].id, "B" + receipt_no, amount, occurred_at, items=items or None)
                                        for who, receipt_no, amount, items, occurred_at in sent], now=T0)

    assert [r["status"] for r in results] == ["credited"] * len(sent), results
    for single, result in zip(singles, results):
        assert lines(result["breakdown"]) == lines(single.lines)
        assert result["points_earned"] == single.total_points
    db.session.expire_all()
    for single_member, batch_member in zip(alone, batched):
        assert balances(batch_member.id) == balances(single_member.id)
    assert broken_accounts() == []


@pytest.mark.usefixtures("ctx")
def test_each_promotion_is_a_bonus_entry_and_a_grant_row_counted_in_its_stats():
    buyer = member()
    double = promotion()

    result, = batch.credit_batch("S1", [item(buyer.id, "R1", "120.00")], now=T0)

    assert lines(result["breakdown"]) == [("base", None, "Base points", D("120.00")),
                                          ("promotion", double.id, "Double points", D("120.00"))]
    assert result["points_earned"] == D("240.00")
    bonus = db.session.scalar(sa.select(Entry).where(Entry.member_id == buyer.id, Entry.type == "bonus"))
    assert (bonus.reference_type, bonus.reference_id, bonus.points) == ("promotion", str(double.id), D("120.00"))
    assert bonus.description == "Promotion Double points: purchase R1"
    stats = promotions.promotion_stats(double.id)
    assert (stats["purchases"], stats["members"], stats["points_granted"], stats["qualifying_spend"]) == \
        (1, 1, D("120.00"), D("120.00"))
    again, = batch.credit_batch("S1", [item(buyer.id, "R1", "120.00")], now=T0 + timedelta(minutes=1))
    assert again["status"] == "replayed" and again["points_earned"] == D("240.00")
    assert lines(again["breakdown"]) == lines(result["breakdown"])
    assert balances(buyer.id)[0] == D("240.00") and broken_accounts() == []


@pytest.mark.usefixtures("ctx")
def test_a_limit_of_one_per_member_counts_within_the_batch_and_after_it():
    buyer, other = member(), member()
    once = promotion(name="Once", effect={"type": "bonus", "points": D("50")}, limits={"per_member": 1})

    results = batch.credit_batch("S1", [item(buyer.id, "R1", "10"), item(other.id, "R2", "10"),
                                        item(buyer.id, "R3", "10")], now=T0)

    assert [r["points_earned"] for r in results] == [D("60.00"), D("60.00"), D("10.00")]
    later = factories.purchase(buyer.id, "10", receipt_no="R4", now=T0).record
    assert later.total_points == D("10.00")
    assert promotions.promotion_stats(once.id)["purchases"] == 2


@pytest.mark.usefixtures("ctx")
def test_a_batch_reaching_the_budget_gets_what_is_left_in_item_order_and_later_ones_nothing():
    buyers = [member() for _ in range(3)]
    capped = promotion(name="Capped", effect={"type": "bonus", "points": D("30")}, limits={"budget_points": D("70")})
    factories.purchase(buyers[0].id, "10", receipt_no="S0", now=T0)  # 30 of the 70 gone

    results = batch.credit_batch("S1", [item(b.id, f"R{n}", "10") for n, b in enumerate(buyers)], now=T0)

    assert [r["points_earned"] for r in results] == [D("40.00"), D("20.00"), D("10.00")]
    db.session.expire_all()
    assert db.session.get(Promotion, capped.id).budget_used == D("70.00")
    assert db.session.scalar(sa.select(sa.func.sum(PromotionGrant.points))) == D("70.00")


@pytest.mark.usefixtures("ctx")
def test_a_refund_of_a_batch_purchase_takes_its_promotion_points_back_pro_rata():
    buyer = member()
    double = promotion()
    result, = batch.credit_batch("S1", [item(buyer.id, "R1", "100.00")], now=T0)

    refund = points.refund_purchase(result["purchase_id"], "S1", "F1", D("25.00"), now=T0 + timedelta(hours=1)).record

    assert refund.points_reversed == D("25.00") and refund.promotion_points == D("25.00")
    assert balances(buyer.id)[0] == D("150.00")
    stats = promotions.promotion_stats(double.id)
    assert (stats["points_granted"], stats["points_clawed_back"]) == (D("100.00"), D("25.00"))
    points.refund_purchase(result["purchase_id"], "S1", "F2", D("75.00"), now=T0 + timedelta(hours=2))
    assert balances(buyer.id)[0] == D("0.00") and broken_accounts() == []


@pytest.mark.usefixtures("ctx")
def test_promotions_in_force_when_the_purchase_was_made_apply_not_those_of_the_upload():
    buyer = member()
    ended = promotion(name="Last week's", effect={"type": "bonus", "points": D("5")}, ends_at=T0 - timedelta(days=2))
    promotion(name="Starts today", effect={"type": "bonus", "points": D("9")}, starts_at=T0 - timedelta(hours=1))

    results = batch.credit_batch("S1", [item(buyer.id, "R1", "10", T0 - timedelta(days=3)),
                                        item(buyer.id, "R2", "10", T0 - timedelta(minutes=30))], now=T0)

    assert [[line.get("promotion_id") for line in r["breakdown"][1:]] for r in results] == [[ended.id], [ended.id + 1]]
    assert [r["points_earned"] for r in results] == [D("15.00"), D("19.00")]


# --- budgets under concurrency ----------------------------------------------------------------------

@on_both_databases
def test_batches_and_single_purchases_racing_never_exceed_a_budget(database, app, headers):
    def build():
        promotion_id = promotions.create_promotion({
            "name": "Budgeted", "status": "active", "starts_at": LONG_AGO,
            "effect": {"type": "bonus", "points": D("30")}, "limits": {"budget_points": D("500")}}, actor="test").id
        return promotion_id, [factories.member().id for _ in range(40)]
    promotion_id, members = setup(app, build)
    occurred = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    singles = [post("/purchases", headers["pos"], {"member_id": m, "receipt_no": f"S{n}", "amount": "10.00"})
               for n, m in enumerate(members[:16])]
    batches = [post("/purchases/batch", headers["pos"], {"purchases": [
        {"member_id": m, "receipt_no": f"B{b}-{n}", "amount": "10.00", "occurred_at": occurred}
        for n, m in enumerate(members[16 + 6 * b:22 + 6 * b])]}) for b in range(4)]

    mixed = [request for n, single in enumerate(singles) for request in ([single, batches[n]] if n < 4 else [single])]

    results = race(app, mixed, threads=10)

    assert all(r.status_code in (200, 201) for r in results), [r.get_json() for r in results]
    used, granted = read(app, lambda: (
        db.session.scalar(sa.select(Promotion.budget_used).where(Promotion.id == promotion_id)),
        db.session.scalar(sa.select(sa.func.sum(PromotionGrant.points)))))
    earned = [D(str(r.get_json()["points_earned"])) - D("10") for r in results if r.status_code == 201] + [
        D(str(item["points_earned"])) - D("10") for r in results if r.status_code == 200
        for item in r.get_json()["results"]]
    assert len(earned) == 40
    assert used == granted == sum(earned) == D("500.00")
    assert sorted(earned, reverse=True) == [D("30.00")] * 16 + [D("20.00")] + [D("0.00")] * 23
    assert_ledger_exact(app)


@pytest.mark.usefixtures("ctx")
def test_a_referred_members_first_purchase_in_a_batch_has_the_welcome_line_as_alone():
    from tests.service.test_referrals import pair, start_campaign
    start_campaign()
    promotion(name="Bonus", effect={"type": "bonus", "points": D("3")})
    _, alone = pair(at=T0 - timedelta(days=2))
    _, batched = pair(at=T0 - timedelta(days=2))

    single = points.credit_purchase(alone, "S1", "A1", D("150.00"), occurred_at=T0 - timedelta(hours=1), now=T0).record
    first, second = batch.credit_batch("S1", [item(batched, "B1", "150.00"), item(batched, "B2", "150.00")], now=T0)

    assert lines(first["breakdown"]) == lines(single.lines)
    assert [line["source"] for line in first["breakdown"]] == ["base", "promotion", "referral"]
    assert [line["source"] for line in second["breakdown"]] == ["base", "promotion"]
    assert first["points_earned"] == single.total_points == D("203.00")
    assert db.session.get(Purchase, first["purchase_id"]).total_points == D("203.00")
    assert balances(batched)[0] == D("356.00") and broken_accounts() == []  # 203 + the second 150 + 3
