"""Promotions through the services: what purchases get, limits, budgets, refunds, drafts, stop,
the audit log, and the settings cache that serves them."""
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa
from flask import current_app
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loyalty import clock
from loyalty.audit import AuditEntry
from loyalty.errors import Conflict, NotFound, ValidationFailed
from loyalty.extensions import db
from loyalty.members.merge import merge_members
from loyalty.points import service as points
from loyalty.points.models import Account, Entry
from loyalty.points.verify import broken_accounts
from loyalty.promotions import service as promotions
from loyalty.promotions.models import PromotionGrant
from loyalty.segments import service as segments
from loyalty.tiers import service as tiers
from tests import factories
from tests.conftest import fresh_programme

D = Decimal
UTC = timezone.utc
LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def context(ctx):
    yield


def promotion(**fields):
    values = {"name": "Double points", "status": "active", "starts_at": LONG_AGO,
              "effect": {"type": "multiplier", "value": D("2")}, **fields}
    return promotions.create_promotion(values, actor="test")


def buy(member_id, amount, **kwargs):
    outcome = factories.purchase(member_id, amount, **kwargs)
    return outcome.record


def lines(purchase):
    return [(line["source"], line.get("promotion_id"), line["points"]) for line in purchase.lines]


def balance(member_id):
    db.session.expire_all()
    return db.session.get(Account, member_id).available


# --- what a purchase gets -----------------------------------------------------------------------

def test_a_double_points_promotion_adds_a_bonus_entry_referencing_it():
    member = factories.member()
    double = promotion()

    purchase = buy(member.id, "100.00")

    assert lines(purchase) == [("base", None, D("100.00")), ("promotion", double.id, D("100.00"))]
    assert purchase.total_points == D("200.00")
    bonus = db.session.scalar(sa.select(Entry).where(Entry.member_id == member.id, Entry.type == "bonus"))
    assert (bonus.points, bonus.reference) == (D("100.00"), {"type": "promotion", "id": str(double.id)})
    assert balance(member.id) == D("200.00")
    assert broken_accounts() == []


def test_the_tier_multiplies_base_points_only_and_has_its_own_line():
    member = factories.member()
    tiers.set_member_tier(member.id, "gold", "test", actor="test")  # x1.5
    double = promotion()

    purchase = buy(member.id, "100.00")

    assert lines(purchase) == [("base", None, D("100.00")), ("tier", None, D("50.00")),
                               ("promotion", double.id, D("100.00"))]
    assert purchase.total_points == D("250.00")


def test_stacking_promotions_add_up_and_an_exclusive_one_wins_alone():
    member = factories.member()
    bonus = promotion(name="Fifty", effect={"type": "bonus", "points": D("50")})
    double = promotion()
    assert {line[1] for line in lines(buy(member.id, "10.00"))} == {None, bonus.id, double.id}

    exclusive = promotion(name="Triple alone", effect={"type": "multiplier", "value": D("3")}, stacking="exclusive")

    assert lines(buy(member.id, "10.00")) == [("base", None, D("10.00")), ("promotion", exclusive.id, D("20.00"))]


def test_drafts_do_not_apply_and_activating_one_applies_to_the_next_purchase():
    member = factories.member()
    draft = promotion(status="draft")
    assert lines(buy(member.id, "10.00")) == [("base", None, D("10.00"))]

    promotions.update_promotion(draft.id, {"status": "active"}, actor="test")

    assert lines(buy(member.id, "10.00"))[-1] == ("promotion", draft.id, D("10.00"))


def test_a_stopped_promotion_gives_nothing_from_the_next_purchase_and_cannot_change():
    member = factories.member()
    double = promotion()
    buy(member.id, "10.00")

    promotions.stop_promotion(double.id, actor="test")

    assert lines(buy(member.id, "10.00")) == [("base", None, D("10.00"))]
    with pytest.raises(Conflict):
        promotions.update_promotion(double.id, {"name": "Again"}, actor="test")
    assert promotions.stop_promotion(double.id, actor="test").status == "stopped"  # stopping twice is fine


def test_the_purchases_occurred_at_decides_not_its_arrival():
    member = factories.member()
    now = clock.now()
    ended = promotion(starts_at=now - timedelta(days=3), ends_at=now - timedelta(days=1))

    late_upload = buy(member.id, "10.00", occurred_at=now - timedelta(days=2))
    today = buy(member.id, "10.00")

    assert lines(late_upload)[-1] == ("promotion", ended.id, D("10.00"))
    assert lines(today) == [("base", None, D("10.00"))]
    assert promotions.status_of(ended) == "ended"


def test_a_first_purchase_promotion_applies_to_the_first_purchase_only():
    member = factories.member()
    welcome = promotion(name="Welcome", effect={"type": "bonus", "points": D("100")},
                        scope={"first_purchase_only": True})

    assert lines(buy(member.id, "10.00"))[-1] == ("promotion", welcome.id, D("100.00"))
    assert lines(buy(member.id, "10.00")) == [("base", None, D("10.00"))]


def test_tags_channels_and_stores_limit_who_gets_a_promotion():
    vip, other = factories.member(), factories.member()
    segments.add_tags(vip.id, ["vip"], actor="test")
    tagged = promotion(name="VIP online in S1", scope={"tags": ["vip"], "channels": ["online"], "stores": ["S1"]})

    assert lines(buy(vip.id, "10.00", channel="online"))[-1][1] == tagged.id
    assert len(lines(buy(vip.id, "10.00"))) == 1  # no channel: a purchase in the store
    assert len(lines(buy(vip.id, "10.00", channel="online", store_id="S2"))) == 1
    assert len(lines(buy(other.id, "10.00", channel="online"))) == 1


def test_only_matching_items_count_for_a_category_promotion():
    member = factories.member()
    drinks = promotion(name="Triple drinks", effect={"type": "multiplier", "value": D("3")},
                       scope={"categories": ["beverage"]})
    items = [{"sku": "TEA", "category": "beverage", "quantity": 1, "amount": D("30.00")},
             {"sku": "CAKE", "category": "bakery", "quantity": 1, "amount": D("50.00")}]

    purchase = buy(member.id, "80.00", items=items)

    assert lines(purchase)[-1] == ("promotion", drinks.id, D("60.00"))
    assert promotions.promotion_stats(drinks.id)["qualifying_spend"] == D("30.00")


# --- limits and budgets -------------------------------------------------------------------------

def test_a_per_member_daily_limit_counts_in_local_days():
    member = factories.member()
    once_a_day = promotion(limits={"per_member": 1, "per_member_period": "day"})
    day = datetime(2026, 11, 24, 4, 0, tzinfo=UTC)  # noon in Shanghai

    with clock.frozen_at(day + timedelta(days=1)):
        first = buy(member.id, "10.00", occurred_at=day)
        second = buy(member.id, "10.00", occurred_at=day + timedelta(hours=11))  # 23:00 the same local day
        next_day = buy(member.id, "10.00", occurred_at=day + timedelta(hours=12))  # 00:00 the next

    assert [len(lines(p)) for p in (first, second, next_day)] == [2, 1, 2]
    assert once_a_day.id in {line[1] for line in lines(next_day)}


def test_a_per_member_limit_for_the_whole_promotion():
    member, other = factories.member(), factories.member()
    twice = promotion(limits={"per_member": 2})

    got = [len(lines(buy(member.id, "10.00"))) for _ in range(3)]

    assert got == [2, 2, 1]
    assert len(lines(buy(other.id, "10.00"))) == 2
    assert twice.per_member_period == "promotion"


def test_the_purchase_reaching_the_budget_gets_what_is_left_and_later_ones_nothing():
    members = [factories.member() for _ in range(4)]
    budgeted = promotion(effect={"type": "bonus", "points": D("40")}, limits={"budget_points": D("100")})

    got = [buy(m.id, "10.00").total_points - D("10.00") for m in members]

    assert got == [D("40.00"), D("40.00"), D("20.00"), D("0.00")]
    stats = promotions.promotion_stats(budgeted.id)
    assert (stats["points_granted"], stats["budget_left"], stats["purchases"], stats["members"]) == \
        (D("100.00"), D("0.00"), 3, 3)


def test_a_budget_cannot_be_set_below_what_was_given():
    member = factories.member()
    budgeted = promotion(effect={"type": "bonus", "points": D("40")}, limits={"budget_points": D("100")})
    buy(member.id, "10.00")

    with pytest.raises(ValidationFailed, match="already given 40.00 points"):
        promotions.update_promotion(budgeted.id, {"limits": {"budget_points": D("39")}}, actor="test")
    promotions.update_promotion(budgeted.id, {"limits": {"budget_points": D("200")}}, actor="test")

    assert promotions.promotion_stats(budgeted.id)["budget_left"] == D("160.00")


# --- refunds --------------------------------------------------------------------------------------

def test_a_refund_takes_promotion_points_back_pro_rata_with_the_base_points():
    member = factories.member()
    double = promotion()
    bonus = promotion(name="Fifty", effect={"type": "bonus", "points": D("50")})
    purchase = buy(member.id, "100.00")

    half = points.refund_purchase(purchase.id, "S1", "F1", D("50.00")).record

    assert (half.points_reversed, half.promotion_points, half.total_points) == (D("50.00"), D("75.00"), D("125.00"))
    assert balance(member.id) == D("125.00")
    rest = points.refund_purchase(purchase.id, "S1", "F2", D("50.00")).record
    assert rest.total_points == D("125.00")
    assert balance(member.id) == D("0.00")
    assert promotions.promotion_stats(double.id)["points_granted"] == D("100.00")
    assert promotions.promotion_stats(double.id)["points_clawed_back"] == D("100.00")
    assert promotions.promotion_stats(bonus.id)["points_clawed_back"] == D("50.00")
    assert broken_accounts() == []


def test_a_refund_of_spent_promotion_points_leaves_debt():
    member = factories.member()
    promotion()
    purchase = buy(member.id, "100.00")
    points.pay_with_points(member.id, "S1", "P1", D("200"))

    points.refund_purchase(purchase.id, "S1", "F1", D("100.00"))

    db.session.expire_all()
    account = db.session.get(Account, member.id)
    assert (account.available, account.debt) == (D("-200.00"), D("200.00"))
    assert broken_accounts() == []


def test_a_replayed_purchase_grants_nothing_twice_and_answers_the_same_lines():
    member = factories.member()
    promotion()
    first = buy(member.id, "10.00", receipt_no="R-1")

    again = factories.purchase(member.id, "10.00", receipt_no="R-1")

    assert again.replayed and again.record.lines == first.lines
    assert db.session.scalar(sa.select(sa.func.count()).select_from(PromotionGrant)) == 1


# --- the audit log and the cache ----------------------------------------------------------------

def test_every_change_is_audit_logged_with_before_and_after():
    double = promotion()
    promotions.update_promotion(double.id, {"name": "Double Tuesdays"}, actor="marketer")
    promotions.stop_promotion(double.id, actor="marketer")

    entries = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.entity_type == "promotion")
                                 .order_by(AuditEntry.id)).all()
    assert [e.action for e in entries] == ["promotion.create", "promotion.update", "promotion.stop"]
    assert entries[1].before["name"] == "Double points" and entries[1].after["name"] == "Double Tuesdays"
    assert entries[2].after["status"] == "stopped"
    assert entries[0].after["effect"] == {"type": "multiplier", "value": "2"}


def test_purchases_keep_the_promotions_cached_even_when_they_spend_a_budget():
    member = factories.member()
    promotion(effect={"type": "bonus", "points": D("5")}, limits={"budget_points": D("100")})
    buy(member.id, "10.00")
    cache = current_app.extensions["loyalty_settings_cache"]
    assert "promotions" in cache.values

    buy(member.id, "10.00")

    assert "promotions" in cache.values  # the budget's counter is not a change of the promotion


def test_an_unknown_promotion_is_not_found():
    with pytest.raises(NotFound):
        promotions.get_promotion(999)
    with pytest.raises(NotFound):
        promotions.stop_promotion(999, actor="test")


# --- simulate is the purchase -------------------------------------------------------------------

def fresh_database():
    """What the clean_database fixture does, once per generated example."""
    db.session.remove()
    fresh_programme()


ITEM = st.fixed_dictionaries({
    "sku": st.sampled_from(["TEA", "COLA", "CAKE", "CIG"]),
    "category": st.sampled_from(["beverage", "bakery", "tobacco"]),
    "quantity": st.just(1),
    "amount": st.decimals(min_value=D("0.01"), max_value=D("300.00"), places=2)})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(baskets=st.lists(st.tuples(st.lists(ITEM, max_size=4), st.decimals(min_value=D("0.00"), max_value=D("500.00"), places=2),
                                  st.sampled_from([None, "online", "store"]), st.integers(0, 2)),
                        min_size=1, max_size=6))
def test_simulate_answers_what_the_purchase_then_credits(app, baskets):
    """Whatever the basket, the member and the promotions' limits and budgets so far, simulate's
    lines are the purchase's lines."""
    fresh_database()
    members = [factories.member() for _ in range(3)]
    tiers.set_member_tier(members[1].id, "gold", "test", actor="test")
    segments.add_tags(members[2].id, ["vip"], actor="test")
    promotion(name="Drinks x3", effect={"type": "multiplier", "value": D("3")}, scope={"categories": ["beverage"]})
    promotion(name="5 per 100", effect={"type": "per_amount", "points": D("5"), "per": D("100.00")},
              limits={"per_member": 2, "per_member_period": "day"})
    promotion(name="Big basket", effect={"type": "bonus", "points": D("50")}, scope={"min_amount": D("200.00")},
              limits={"budget_points": D("120")})
    promotion(name="Gold online", effect={"type": "multiplier", "value": D("1.5")}, stacking="exclusive",
              scope={"tiers": ["gold"], "channels": ["online"]}, priority=2)
    promotion(name="VIP welcome", effect={"type": "bonus", "points": D("30")},
              scope={"tags": ["vip"], "first_purchase_only": True})
    promotion(name="Draft", status="draft", effect={"type": "bonus", "points": D("1000")})
    for n, (items, extra, channel, who) in enumerate(baskets):
        amount = sum((item["amount"] for item in items), D("0.00")) + extra
        if amount <= 0:
            continue
        quote = points.quote_purchase(members[who].id, "S1", amount, items=items, channel=channel)

        purchase = factories.purchase(members[who].id, amount, receipt_no=f"H{n}", items=items, channel=channel).record

        assert quote["breakdown"] == purchase.lines
        assert quote["points"] == purchase.total_points
    assert broken_accounts() == []


def test_a_merge_moves_promotion_grants_so_limits_count_for_the_survivor():
    keep, gone = factories.member(), factories.member()
    promotion(limits={"per_member": 1})
    buy(gone.id, "10.00")

    merge_members(keep.id, gone.id, actor="test")

    assert lines(buy(keep.id, "10.00")) == [("base", None, D("10.00"))]
    assert broken_accounts() == []
