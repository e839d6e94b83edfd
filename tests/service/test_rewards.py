"""Rewards at the service level (issue #4): the catalog marketing runs, redemptions that spend
points earliest-expiring first under the account's lock, vouchers a till accepts once, and
cancellations that give points back to the lots they came from and units back to stock.

Time is explicit everywhere (`now=`). T0 is 12:00 on 2026-03-10 in Shanghai (the deployment's
time zone); "days" and "months" are local ones."""
import os
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from loyalty.audit import AuditEntry
from loyalty.errors import (Conflict, InsufficientPoints, LimitReached, NotEligible, NotFound,
                            OutOfStock, ValidationFailed, VoucherExpired, VoucherUsed, VoucherVoid)
from loyalty.extensions import db
from loyalty.points import service as points
from loyalty.points.models import Entry, LotAllocation
from loyalty.points.verify import broken_accounts
from loyalty.rewards import service
from loyalty.rewards.models import Redemption, Reward, Voucher
from loyalty.tiers import service as tiers
from tests import factories
from tests.factories import D
from tests.service.ledger_helpers import T0, balances, entries, lot_rows, lots, use_rules, utc

pytestmark = pytest.mark.usefixtures("ctx")

EXPIRY_30 = utc(2026, 4, 9, 16)  # a lot credited at T0 with 30-day expiry: end of 9 April, local
CODE = re.compile(r"^[23456789ABCDEFGHJKMNPQRSTUVWXYZ]{12}$")  # no 0/O, 1/I/L
ON_POSTGRES = (os.environ.get("LOYALTY_TEST_DATABASE_URL") or "").startswith("postgresql")


@pytest.fixture(autouse=True)
def ledger_invariants_hold(ctx):
    """After every test, whatever it redeemed or cancelled: DESIGN.md's invariants hold."""
    yield
    assert broken_accounts() == []


# --- helpers ------------------------------------------------------------------------------------

def new_reward(**fields):
    """A reward through the service, as marketing would create it at T0."""
    fields = {"name": "Tote bag", "kind": "goods", "points_cost": D("100.00"), "voucher_valid_days": 30,
              **fields}
    return service.create_reward(fields, actor="marketing test", now=T0)


def member_with(points, now=T0):
    """A new member holding `points` (from one purchase at `now`): the id."""
    member = factories.member(now=now)
    factories.purchase(member.id, points, now=now)
    return member.id


def redeem(member_id, reward_id, quantity=1, now=T0):
    return service.redeem(member_id, reward_id, quantity=quantity, now=now)


def count(model):
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def stock(reward_id):
    return db.session.scalar(sa.select(Reward.stock).where(Reward.id == reward_id))


def vouchers_of(member_id):
    """The member's vouchers in the order they were issued, as stored now."""
    return db.session.scalars(sa.select(Voucher).where(Voucher.member_id == member_id).order_by(Voucher.id)
                              .execution_options(populate_existing=True)).all()


def audit(action):
    return db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == action)
                              .order_by(AuditEntry.id)).all()


def catalog_reasons(member_id, now=T0, **kwargs):
    return {item["reward"].name: (item["redeemable"], item["reason"])
            for item in service.catalog(member_id, now=now, **kwargs)}


def lot_expiries(member_id):
    return [(lot.status, lot.remaining, lot.expires_at) for lot in lot_rows(member_id)]


# --- the catalog ------------------------------------------------------------------------------

def test_a_reward_keeps_every_field_marketing_sets_and_is_audit_logged(ctx):
    reward = new_reward(name="50 yuan voucher", description="Off any purchase", kind="cash_voucher",
                        cash_value=D("50.00"), points_cost=D("4999.50"), stock=100, per_member_limit=2,
                        limit_period="month", min_tier="silver", valid_from=utc(2026, 3, 1),
                        valid_until=utc(2026, 6, 1), voucher_valid_days=14, active=True,
                        image_url="https://cdn.example.com/v50.png")

    stored = db.session.get(Reward, reward.id, populate_existing=True)
    assert (stored.name, stored.description, stored.kind, stored.cash_value, stored.points_cost) == \
        ("50 yuan voucher", "Off any purchase", "cash_voucher", D("50.00"), D("4999.50"))
    assert (stored.stock, stored.per_member_limit, stored.limit_period, stored.min_tier) == (100, 2, "month", "silver")
    assert (stored.valid_from, stored.valid_until) == (utc(2026, 3, 1), utc(2026, 6, 1))
    assert (stored.voucher_valid_days, stored.active, stored.image_url) == \
        (14, True, "https://cdn.example.com/v50.png")
    assert (stored.created_at, stored.updated_at) == (T0, T0)
    [entry] = audit("reward.create")
    assert (entry.actor, entry.entity_type, entry.entity_id, entry.before) == \
        ("marketing test", "reward", str(reward.id), None)
    assert entry.after["cash_value"] == "50.00" and entry.after["points_cost"] == "4999.50"
    assert entry.after["valid_until"] == "2026-06-01T00:00:00+00:00"


def test_defaults_of_a_new_reward(ctx):
    reward = new_reward()

    stored = db.session.get(Reward, reward.id, populate_existing=True)
    assert (stored.description, stored.limit_period, stored.active) == ("", "ever", True)
    assert (stored.stock, stored.per_member_limit, stored.min_tier, stored.cash_value) == (None, None, None, None)


def test_an_update_is_audit_logged_with_before_and_after(ctx):
    reward = new_reward(stock=10)

    service.update_reward(reward.id, {"points_cost": D("80.00"), "stock": 3, "active": False},
                          actor="marketing test", now=T0 + timedelta(hours=1))

    stored = db.session.get(Reward, reward.id, populate_existing=True)
    assert (stored.points_cost, stored.stock, stored.active) == (D(80), 3, False)
    assert stored.updated_at == T0 + timedelta(hours=1)
    [entry] = audit("reward.update")
    assert entry.before["points_cost"] == "100.00" and entry.after["points_cost"] == "80.00"
    assert (entry.before["stock"], entry.after["stock"]) == (10, 3)
    assert (entry.before["active"], entry.after["active"]) == (True, False)
    assert entry.created_at == T0 + timedelta(hours=1)


@pytest.mark.parametrize("fields, field, message", [
    ({"kind": "cash_voucher"}, "cash_value", "A cash voucher needs its money value."),
    ({"kind": "goods", "cash_value": D(10)}, "cash_value", "Only cash vouchers have a money value."),
    ({"kind": "gift"}, "kind", "Must be one of: goods, service, coupon, cash_voucher."),
    ({"limit_period": "week"}, "limit_period", "Must be one of: month, ever."),
    ({"valid_from": utc(2026, 4, 1), "valid_until": utc(2026, 4, 1)}, "valid_until", "Must be after valid_from."),
    ({"min_tier": "platinum"}, "min_tier", "Must be one of: ordinary, silver, gold, diamond."),
])
def test_an_invalid_reward_is_refused_and_nothing_is_stored(ctx, fields, field, message):
    with pytest.raises(ValidationFailed) as refused:
        new_reward(**fields)

    assert refused.value.errors == {field: [message]}
    assert field in refused.value.message
    assert count(Reward) == 0 and audit("reward.create") == []


def test_an_update_that_would_make_the_reward_invalid_changes_nothing(ctx):
    reward = new_reward(kind="coupon")

    with pytest.raises(ValidationFailed) as refused:
        service.update_reward(reward.id, {"kind": "cash_voucher"}, actor="marketing test", now=T0)

    assert refused.value.errors == {"cash_value": ["A cash voucher needs its money value."]}
    assert db.session.get(Reward, reward.id, populate_existing=True).kind == "coupon"
    assert audit("reward.update") == []
    service.update_reward(reward.id, {"kind": "cash_voucher", "cash_value": D("20.00")},
                          actor="marketing test", now=T0)
    assert db.session.get(Reward, reward.id, populate_existing=True).cash_value == D("20.00")


def test_updating_an_unknown_reward_is_not_found(ctx):
    with pytest.raises(NotFound):
        service.update_reward(999, {"stock": 1}, actor="marketing test", now=T0)


def test_the_catalog_lists_what_is_on_offer_now_cheapest_first(ctx):
    new_reward(name="Mug", points_cost=D(300))
    new_reward(name="Pen", points_cost=D(50))
    new_reward(name="Off", active=False)
    new_reward(name="Soon", valid_from=T0 + timedelta(seconds=1))
    new_reward(name="Starts now", points_cost=D(60), valid_from=T0)
    new_reward(name="Over", valid_until=T0)
    new_reward(name="Ends later", points_cost=D(70), valid_until=T0 + timedelta(seconds=1))

    on_offer = [item["reward"].name for item in service.catalog(now=T0)]
    everything = [item["reward"].name for item in service.catalog(include_inactive=True, now=T0)]

    assert on_offer == ["Pen", "Starts now", "Ends later", "Mug"]
    assert sorted(everything) == ["Ends later", "Mug", "Off", "Over", "Pen", "Soon", "Starts now"]
    assert all("redeemable" not in item for item in service.catalog(now=T0))


def test_the_catalog_tells_a_member_what_they_can_redeem_and_why_not(ctx):
    member_id = member_with("150.00")
    new_reward(name="Pen", points_cost=D(50))
    new_reward(name="Mug", points_cost=D(300))
    new_reward(name="Sold out", points_cost=D(10), stock=0)
    limited = new_reward(name="Once", points_cost=D(20), per_member_limit=1)
    new_reward(name="Gold only", points_cost=D(10), min_tier="gold")
    redeem(member_id, limited.id)

    assert catalog_reasons(member_id) == {
        "Pen": (True, None),
        "Mug": (False, "insufficient_points"),
        "Sold out": (False, "out_of_stock"),
        "Once": (False, "limit_reached"),
        "Gold only": (False, "not_eligible"),
    }


def test_the_catalog_for_marketing_says_why_rewards_off_offer_are_not_eligible(ctx):
    member_id = member_with("500.00")
    new_reward(name="Off", active=False)
    new_reward(name="Soon", valid_from=T0 + timedelta(days=1))
    new_reward(name="Over", valid_until=T0)

    assert catalog_reasons(member_id, include_inactive=True) == {
        "Off": (False, "not_eligible"), "Soon": (False, "not_eligible"), "Over": (False, "not_eligible")}


def test_the_catalog_for_an_unknown_member_is_not_found(ctx):
    new_reward()
    with pytest.raises(NotFound):
        service.catalog(999, now=T0)


def test_the_catalog_does_not_count_points_that_have_expired_since_the_last_write(ctx):
    use_rules(expiry_days=30)
    member_id = member_with("100.00")
    reward = new_reward(name="Pen", points_cost=D(50))

    with pytest.raises(InsufficientPoints):
        redeem(member_id, reward.id, now=EXPIRY_30)
    assert catalog_reasons(member_id, now=EXPIRY_30) == {"Pen": (False, "insufficient_points")}


def test_the_catalog_counts_pending_points_that_have_become_available(ctx):
    use_rules(pending_days=7)
    member_id = member_with("100.00")
    reward = new_reward(name="Pen", points_cost=D(50))
    a_week_later = T0 + timedelta(days=7)

    assert catalog_reasons(member_id, now=a_week_later) == {"Pen": (True, None)}
    redeem(member_id, reward.id, now=a_week_later)


# --- redeeming --------------------------------------------------------------------------------

def test_a_redemption_spends_the_points_and_issues_one_voucher_per_unit(ctx):
    member_id = member_with("500.00")
    reward = new_reward(points_cost=D("120.50"), stock=10)

    outcome = redeem(member_id, reward.id, quantity=3)

    redemption = outcome.record
    assert outcome.replayed is False and outcome.member.id == member_id
    assert (redemption.member_id, redemption.reward_id, redemption.quantity) == (member_id, reward.id, 3)
    assert (redemption.unit_cost, redemption.points_spent, redemption.points_returned) == \
        (D("120.50"), D("361.50"), D(0))
    assert (redemption.status, redemption.created_at, redemption.cancelled_at) == ("completed", T0, None)
    assert balances(member_id) == (D("138.50"), D(0), D("500.00"), D(0))
    assert entries(member_id) == [("earn_purchase", D("500.00")), ("redeem", D("-361.50"))]
    entry = db.session.get(Entry, redemption.entry_id)
    assert entry.description == "Redeemed 3 × Tote bag"
    assert entry.reference == {"type": "redemption", "id": str(redemption.id)}
    assert stock(reward.id) == 7
    vouchers = vouchers_of(member_id)
    assert len(vouchers) == 3 and len({v.code for v in vouchers}) == 3
    for voucher in vouchers:
        assert CODE.match(voucher.code), voucher.code
        assert (voucher.status, voucher.redemption_id, voucher.reward_id) == ("issued", redemption.id, reward.id)
        assert service.voucher_status(voucher, T0) == "issued"


def test_voucher_codes_are_unguessable(ctx):
    member_id = member_with("2000.00")
    reward = new_reward(points_cost=D(1))

    codes = [v.code for _ in range(5) for v in redeem(member_id, reward.id, quantity=20).record.vouchers]

    assert len(codes) == len(set(codes)) == 100
    assert all(CODE.match(code) for code in codes)
    # Spread over the whole alphabet, not a counter: every position varies.
    assert all(len({code[i] for code in codes}) > 10 for i in range(12))


def test_an_unlimited_reward_has_no_stock_to_take(ctx):
    member_id = member_with("500.00")
    reward = new_reward()

    redeem(member_id, reward.id, quantity=2)

    assert stock(reward.id) is None


def test_spending_takes_the_earliest_expiring_lots_first_and_never_expiring_ones_last(ctx):
    member = factories.member(now=T0)
    use_rules(expiry_policy="never")
    factories.purchase(member.id, "100.00", now=T0)  # never expires
    use_rules(expiry_policy="days_after_available", expiry_days=30)
    factories.purchase(member.id, "100.00", now=T0 + timedelta(days=5))  # expires 14 April
    factories.purchase(member.id, "100.00", now=T0)  # expires 9 April
    reward = new_reward(points_cost=D(75))

    redemption = redeem(member.id, reward.id, quantity=3, now=T0 + timedelta(days=6)).record

    assert lots(member.id) == [("available", D(100), D(75)), ("available", D(100), D(0)),
                               ("available", D(100), D(0))]
    lot_ids = [lot.id for lot in lot_rows(member.id)]
    taken = db.session.execute(sa.select(LotAllocation.lot_id, LotAllocation.points)
                               .where(LotAllocation.entry_id == redemption.entry_id)
                               .order_by(LotAllocation.id)).all()
    assert taken == [(lot_ids[2], D(100)), (lot_ids[1], D(100)), (lot_ids[0], D(25))]


def test_not_enough_points_is_refused_and_nothing_changes(ctx):
    member_id = member_with("99.99")
    reward = new_reward(stock=5)

    with pytest.raises(InsufficientPoints) as refused:
        redeem(member_id, reward.id)

    assert refused.value.message == "The member has 99.99 points available; 100.00 are needed."
    assert balances(member_id)[0] == D("99.99")
    assert stock(reward.id) == 5
    assert count(Redemption) == 0 and count(Voucher) == 0
    assert entries(member_id) == [("earn_purchase", D("99.99"))]


def test_the_cost_is_per_unit(ctx):
    member_id = member_with("250.00")
    reward = new_reward()

    with pytest.raises(InsufficientPoints):
        redeem(member_id, reward.id, quantity=3)
    redeem(member_id, reward.id, quantity=2)

    assert balances(member_id)[0] == D("50.00")


def test_points_that_expired_cannot_be_redeemed(ctx):
    use_rules(expiry_days=30)
    member_id = member_with("100.00")
    reward = new_reward()

    redeem(member_id, reward.id, now=EXPIRY_30 - timedelta(seconds=1))
    member_id = member_with("100.00")
    with pytest.raises(InsufficientPoints):
        redeem(member_id, reward.id, now=EXPIRY_30)


def test_a_member_in_debt_cannot_redeem_until_the_debt_is_paid(ctx):
    member = factories.member(now=T0)
    purchase = factories.purchase(member.id, "100.00", now=T0).record
    points.pay_with_points(member.id, "S1", "P1", D(100), now=T0)
    points.refund_purchase(purchase.id, "S1", "RF1", D("100.00"), now=T0)  # spent: 100 of debt
    factories.purchase(member.id, "50.00", now=T0)  # pays 50 of the debt
    assert balances(member.id) == (D(-50), D(0), D(50), D(50))
    reward = new_reward(points_cost=D(30))

    with pytest.raises(InsufficientPoints) as refused:
        redeem(member.id, reward.id)
    assert refused.value.message == "The member has 0.00 points available; 30.00 are needed."
    factories.purchase(member.id, "60.00", now=T0)  # 50 pay the debt: 10 are left, not 60
    with pytest.raises(InsufficientPoints):
        redeem(member.id, reward.id)
    assert balances(member.id) == (D(10), D(0), D(110), D(0))
    factories.purchase(member.id, "20.00", now=T0)

    redeem(member.id, reward.id)

    assert balances(member.id) == (D(0), D(0), D(130), D(0))
    assert count(Redemption) == 1


def test_a_reward_for_a_higher_tier_is_refused_below_it(ctx):
    member_id = member_with("500.00")
    reward = new_reward(name="Lounge", min_tier="gold")

    with pytest.raises(NotEligible) as refused:
        redeem(member_id, reward.id)
    assert refused.value.message == "Lounge is for gold members and above."
    tiers.set_member_tier(member_id, "silver", "test", actor="test", now=T0)
    with pytest.raises(NotEligible):
        redeem(member_id, reward.id)
    assert balances(member_id)[0] == D("500.00") and count(Voucher) == 0

    tiers.set_member_tier(member_id, "gold", "test", actor="test", now=T0)
    redeem(member_id, reward.id)
    tiers.set_member_tier(member_id, "diamond", "test", actor="test", now=T0)
    redeem(member_id, reward.id)

    assert count(Voucher) == 2


def test_a_reward_is_redeemable_only_inside_its_validity_window(ctx):
    member_id = member_with("1000.00")
    start, end = utc(2026, 3, 15, 16), utc(2026, 3, 31, 16)  # 16 March to 31 March, local
    reward = new_reward(name="Spring", valid_from=start, valid_until=end)

    with pytest.raises(NotEligible) as refused:
        redeem(member_id, reward.id, now=start - timedelta(seconds=1))
    assert refused.value.message == "Spring is not on offer now."
    redeem(member_id, reward.id, now=start)
    redeem(member_id, reward.id, now=end - timedelta(seconds=1))
    with pytest.raises(NotEligible):
        redeem(member_id, reward.id, now=end)

    assert count(Voucher) == 2 and balances(member_id)[0] == D("800.00")


def test_an_inactive_reward_cannot_be_redeemed(ctx):
    member_id = member_with("500.00")
    reward = new_reward(active=False, stock=3)

    with pytest.raises(NotEligible):
        redeem(member_id, reward.id)
    assert stock(reward.id) == 3 and balances(member_id)[0] == D("500.00")
    service.update_reward(reward.id, {"active": True}, actor="marketing test", now=T0)
    redeem(member_id, reward.id)
    service.update_reward(reward.id, {"active": False}, actor="marketing test", now=T0)
    with pytest.raises(NotEligible):
        redeem(member_id, reward.id)


def test_stock_runs_out(ctx):
    member_id = member_with("1000.00")
    reward = new_reward(name="Mug", stock=3)

    redeem(member_id, reward.id, quantity=2)
    with pytest.raises(OutOfStock) as refused:
        redeem(member_id, reward.id, quantity=2)
    assert refused.value.message == "Mug has 1 left."
    redeem(member_id, reward.id, quantity=1)
    with pytest.raises(OutOfStock):
        redeem(member_id, reward.id)

    assert stock(reward.id) == 0
    assert balances(member_id)[0] == D("700.00")
    assert count(Voucher) == 3


@pytest.mark.parametrize("quantity", [0, -1, 21])
def test_a_quantity_out_of_range_is_refused(ctx, quantity):
    member_id = member_with("5000.00")
    reward = new_reward(points_cost=D(1))

    with pytest.raises(ValidationFailed) as refused:
        redeem(member_id, reward.id, quantity=quantity)

    assert refused.value.errors == {"quantity": ["Must be between 1 and 20."]}


def test_an_unknown_reward_or_member_is_not_found(ctx):
    member_id = member_with("500.00")
    reward = new_reward()

    with pytest.raises(NotFound):
        redeem(member_id, 999)
    with pytest.raises(NotFound):
        redeem(999, reward.id)


def test_a_limit_for_ever_counts_every_unit_redeemed(ctx):
    use_rules(expiry_policy="never")
    member_id = member_with("1000.00")
    other_id = member_with("1000.00")
    reward = new_reward(name="Cap", per_member_limit=2, limit_period="ever")

    redeem(member_id, reward.id)
    with pytest.raises(LimitReached) as refused:
        redeem(member_id, reward.id, quantity=2)
    assert refused.value.message == "Cap is limited to 2 per member in all; this member has redeemed 1."
    redeem(member_id, reward.id, now=T0 + timedelta(days=400))
    with pytest.raises(LimitReached):
        redeem(member_id, reward.id, now=T0 + timedelta(days=800))
    redeem(other_id, reward.id, quantity=2)  # the limit is per member

    assert len(vouchers_of(member_id)) == 2 and len(vouchers_of(other_id)) == 2


def test_a_monthly_limit_resets_at_midnight_on_the_first_in_shanghai_not_in_utc(ctx):
    member_id = member_with("1000.00", now=utc(2026, 3, 1))
    reward = new_reward(name="Coffee", per_member_limit=1, limit_period="month")
    late_on_31_march = utc(2026, 3, 31, 15, 30)  # 23:30 local
    first_of_april = utc(2026, 3, 31, 16)  # 00:00 on 1 April local; still 31 March in UTC

    redeem(member_id, reward.id, now=late_on_31_march)
    with pytest.raises(LimitReached) as refused:
        redeem(member_id, reward.id, now=first_of_april - timedelta(seconds=1))
    assert refused.value.message == \
        "Coffee is limited to 1 per member this month; this member has redeemed 1."

    redeem(member_id, reward.id, now=first_of_april)
    with pytest.raises(LimitReached):
        redeem(member_id, reward.id, now=utc(2026, 4, 30, 15, 59))  # 23:59 on 30 April, local
    redeem(member_id, reward.id, now=utc(2026, 4, 30, 16))  # 1 May, local

    assert len(vouchers_of(member_id)) == 3


def test_a_monthly_limit_counts_used_and_expired_vouchers(ctx):
    member_id = member_with("1000.00")
    reward = new_reward(per_member_limit=2, limit_period="month", voucher_valid_days=0)

    first = redeem(member_id, reward.id).record
    service.use_voucher(first.vouchers[0].code, "S1", now=T0)
    redeem(member_id, reward.id)  # its voucher expires tonight, and still counts

    with pytest.raises(LimitReached):
        redeem(member_id, reward.id, now=T0 + timedelta(days=3))


def test_the_units_of_a_cancelled_redemption_no_longer_count_towards_the_limit(ctx):
    member_id = member_with("1000.00")
    reward = new_reward(per_member_limit=2, limit_period="month")
    redeem(member_id, reward.id)
    second = redeem(member_id, reward.id).record

    service.cancel_redemption(second.id, actor="app test", now=T0 + timedelta(hours=1))

    redeem(member_id, reward.id, now=T0 + timedelta(days=3))  # the void voucher freed its unit
    with pytest.raises(LimitReached):
        redeem(member_id, reward.id, now=T0 + timedelta(days=3))


def test_the_catalog_applies_the_monthly_limit_in_local_months_too(ctx):
    member_id = member_with("1000.00", now=utc(2026, 3, 1))
    new_reward(name="Coffee", per_member_limit=1, limit_period="month")
    reward_id = db.session.scalar(sa.select(Reward.id))
    redeem(member_id, reward_id, now=utc(2026, 3, 31, 15, 30))

    assert catalog_reasons(member_id, now=utc(2026, 3, 31, 15, 59)) == {"Coffee": (False, "limit_reached")}
    assert catalog_reasons(member_id, now=utc(2026, 3, 31, 16)) == {"Coffee": (True, None)}


# --- vouchers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("redeemed_at, expires_at", [
    (utc(2026, 3, 10, 15, 30), utc(2026, 4, 9, 16)),  # 23:30 on 10 March local: through 9 April
    (utc(2026, 3, 10, 16, 30), utc(2026, 4, 10, 16)),  # 00:30 on 11 March local: through 10 April
    (utc(2026, 3, 9, 16), utc(2026, 4, 9, 16)),  # 00:00 on 10 March local
], ids=["late-evening", "just-after-midnight", "midnight"])
def test_a_voucher_expires_at_the_end_of_the_local_day(ctx, redeemed_at, expires_at):
    member_id = member_with("500.00", now=utc(2026, 3, 1))
    reward = new_reward(voucher_valid_days=30)

    [voucher] = redeem(member_id, reward.id, now=redeemed_at).record.vouchers

    assert voucher.expires_at == expires_at
    assert service.voucher_status(voucher, expires_at - timedelta(seconds=1)) == "issued"
    assert service.voucher_status(voucher, expires_at) == "expired"


def test_a_voucher_valid_for_zero_days_is_good_until_tonight(ctx):
    member_id = member_with("500.00")
    reward = new_reward(voucher_valid_days=0)

    [voucher] = redeem(member_id, reward.id).record.vouchers

    assert voucher.expires_at == utc(2026, 3, 10, 16)


def test_a_voucher_is_used_once_at_a_store(ctx):
    member_id = member_with("500.00")
    reward = new_reward()
    [voucher] = redeem(member_id, reward.id).record.vouchers
    code = voucher.code
    used_at = T0 + timedelta(hours=2)

    used = service.use_voucher(code, "S7", now=used_at)

    assert (used.status, used.used_at, used.used_store_id) == ("used", used_at, "S7")
    assert service.voucher_status(used, used_at + timedelta(days=100)) == "used"
    with pytest.raises(VoucherUsed) as refused:
        service.use_voucher(code, "S8", now=used_at + timedelta(minutes=1))
    assert refused.value.message == "This voucher was already used at store S7 on 2026-03-10 06:00 UTC."
    again = vouchers_of(member_id)[0]
    assert (again.status, again.used_at, again.used_store_id) == ("used", used_at, "S7")


def test_a_voucher_is_refused_from_the_instant_it_expires(ctx):
    member_id = member_with("500.00")
    reward = new_reward(voucher_valid_days=30)
    [voucher] = redeem(member_id, reward.id, quantity=2).record.vouchers[:1]
    expiry = utc(2026, 4, 9, 16)

    with pytest.raises(VoucherExpired) as refused:
        service.use_voucher(voucher.code, "S1", now=expiry)

    assert refused.value.message == "This voucher expired at 2026-04-09 16:00 UTC."
    assert vouchers_of(member_id)[0].status == "issued"
    other = vouchers_of(member_id)[1]
    assert service.use_voucher(other.code, "S1", now=expiry - timedelta(seconds=1)).status == "used"


def test_a_void_voucher_is_refused(ctx):
    member_id = member_with("500.00")
    redemption = redeem(member_id, new_reward().id).record
    code = redemption.vouchers[0].code
    service.cancel_redemption(redemption.id, actor="app test", now=T0)

    with pytest.raises(VoucherVoid):
        service.use_voucher(code, "S1", now=T0 + timedelta(minutes=1))
    # Void wins over expired: the cashier is told the voucher was cancelled.
    with pytest.raises(VoucherVoid):
        service.use_voucher(code, "S1", now=T0 + timedelta(days=365))
    assert vouchers_of(member_id)[0].status == "void"


def test_a_voucher_code_is_found_in_any_case_and_with_dashes_or_spaces(ctx):
    member_id = member_with("500.00")
    [voucher] = redeem(member_id, new_reward().id).record.vouchers
    code = voucher.code
    typed = f"{code[:4].lower()}-{code[4:8]} {code[8:].lower()}"

    assert service.get_voucher(typed).id == voucher.id
    assert service.use_voucher(typed, "S1", now=T0).code == code


def test_an_unknown_voucher_code_is_not_found(ctx):
    with pytest.raises(NotFound):
        service.get_voucher("ABCDEFGHJKMN")
    with pytest.raises(NotFound):
        service.use_voucher("ABCDEFGHJKMN", "S1", now=T0)


# --- cancelling -------------------------------------------------------------------------------

def test_cancelling_returns_the_points_to_the_lots_they_came_from_with_their_expiry(ctx):
    use_rules(expiry_days=30)
    member = factories.member(now=T0)
    factories.purchase(member.id, "100.00", now=T0)  # expires 9 April
    factories.purchase(member.id, "100.00", now=T0 + timedelta(days=5))  # expires 14 April
    reward = new_reward(points_cost=D(75))
    redemption = redeem(member.id, reward.id, quantity=2, now=T0 + timedelta(days=6)).record
    assert lots(member.id) == [("available", D(100), D(0)), ("available", D(100), D(50))]
    cancelled_at = T0 + timedelta(days=7)

    outcome = service.cancel_redemption(redemption.id, actor="app test", now=cancelled_at)

    cancelled = outcome.record
    assert outcome.replayed is False
    assert (cancelled.status, cancelled.cancelled_at, cancelled.points_returned) == \
        ("cancelled", cancelled_at, D(150))
    assert [v.status for v in vouchers_of(member.id)] == ["void", "void"]
    assert lot_expiries(member.id) == [("available", D(100), EXPIRY_30),
                                       ("available", D(100), EXPIRY_30 + timedelta(days=5))]
    assert entries(member.id)[-2:] == [("redeem", D(-150)), ("reverse", D(150))]
    reverse = db.session.get(Entry, cancelled.reversal_entry_id)
    assert reverse.description == "Cancelled 2 × Tote bag"
    assert reverse.reference == {"type": "redemption", "id": str(redemption.id)}
    assert balances(member.id) == (D(200), D(0), D(200), D(0))
    summary = points.points_summary(member.id, now=cancelled_at)
    assert summary["expiring"] == [{"points": D(100), "expires_at": EXPIRY_30},
                                   {"points": D(100), "expires_at": EXPIRY_30 + timedelta(days=5)}]
    [entry] = audit("redemption.cancel")
    assert (entry.actor, entry.entity_id) == ("app test", str(redemption.id))
    assert entry.after == {"status": "cancelled", "vouchers_void": 2, "points_returned": "150.00"}


def test_points_returned_to_a_lot_that_expired_meanwhile_expire_again(ctx):
    use_rules(expiry_days=30)
    member = factories.member(now=T0)
    factories.purchase(member.id, "100.00", now=T0)  # expires 9 April
    factories.purchase(member.id, "100.00", now=T0 + timedelta(days=20))  # expires 29 April
    reward = new_reward(points_cost=D(60), voucher_valid_days=60)
    redemption = redeem(member.id, reward.id, quantity=2, now=T0 + timedelta(days=21)).record
    assert lots(member.id) == [("available", D(100), D(0)), ("available", D(100), D(80))]
    # 9 April passes: nothing was left in the first lot, so nothing expired.
    after_expiry = EXPIRY_30 + timedelta(days=1)

    service.cancel_redemption(redemption.id, actor="app test", now=after_expiry)

    # 100 from the first lot come back and expire at once; 20 go back to the second lot.
    assert entries(member.id)[-3:] == [("redeem", D(-120)), ("reverse", D(120)), ("expire", D(-100))]
    assert lots(member.id) == [("expired", D(100), D(0)), ("available", D(100), D(100))]
    assert balances(member.id) == (D(100), D(0), D(200), D(0))


def test_cancelling_gives_the_units_back_to_stock(ctx):
    member_id = member_with("1000.00")
    reward = new_reward(stock=3)
    redemption = redeem(member_id, reward.id, quantity=3).record
    with pytest.raises(OutOfStock):
        redeem(member_id, reward.id)

    service.cancel_redemption(redemption.id, actor="app test", now=T0)

    assert stock(reward.id) == 3
    redeem(member_id, reward.id, quantity=3)
    assert stock(reward.id) == 0


def test_cancelling_twice_returns_the_points_once(ctx):
    member_id = member_with("500.00")
    reward = new_reward(stock=5)
    redemption = redeem(member_id, reward.id, quantity=2).record
    service.cancel_redemption(redemption.id, actor="app test", now=T0)

    again = service.cancel_redemption(redemption.id, actor="app test", now=T0 + timedelta(hours=1))

    assert again.replayed is True
    assert (again.record.id, again.record.status, again.record.cancelled_at) == (redemption.id, "cancelled", T0)
    assert entries(member_id) == [("earn_purchase", D(500)), ("redeem", D(-200)), ("reverse", D(200))]
    assert stock(reward.id) == 5
    assert len(audit("redemption.cancel")) == 1


def test_a_redemption_whose_vouchers_are_all_used_cannot_be_cancelled(ctx):
    member_id = member_with("500.00")
    reward = new_reward(stock=5)
    redemption = redeem(member_id, reward.id, quantity=2).record
    for voucher in redemption.vouchers:
        service.use_voucher(voucher.code, "S1", now=T0)

    with pytest.raises(Conflict) as refused:
        service.cancel_redemption(redemption.id, actor="app test", now=T0)

    assert "nothing to cancel" in refused.value.message
    assert db.session.get(Redemption, redemption.id, populate_existing=True).status == "completed"
    assert [v.status for v in vouchers_of(member_id)] == ["used", "used"]
    assert balances(member_id)[0] == D(300) and stock(reward.id) == 3
    assert audit("redemption.cancel") == []


def test_cancelling_after_one_of_two_vouchers_was_used_returns_only_the_unused_one(ctx):
    use_rules(expiry_days=30)
    member = factories.member(now=T0)
    factories.purchase(member.id, "100.00", now=T0)  # expires 9 April
    factories.purchase(member.id, "100.00", now=T0 + timedelta(days=5))  # expires 14 April
    reward = new_reward(points_cost=D(80), stock=10)
    redemption = redeem(member.id, reward.id, quantity=2, now=T0 + timedelta(days=6)).record
    first, second = redemption.vouchers
    service.use_voucher(second.code, "S1", now=T0 + timedelta(days=6, hours=1))

    outcome = service.cancel_redemption(redemption.id, actor="app test", now=T0 + timedelta(days=7))

    assert (outcome.record.status, outcome.record.points_spent, outcome.record.points_returned) == \
        ("cancelled", D(160), D(80))
    statuses = {v.code: v.status for v in vouchers_of(member.id)}
    assert statuses == {first.code: "void", second.code: "used"}
    assert stock(reward.id) == 9
    assert entries(member.id)[-2:] == [("redeem", D(-160)), ("reverse", D(80))]
    # 100 came from the first lot, 60 from the second; the 80 returned go back to the lots
    # taken last (the later-expiring ones) first: 60 to the second lot, 20 to the first.
    assert lots(member.id) == [("available", D(100), D(20)), ("available", D(100), D(100))]
    assert balances(member.id)[0] == D(120)
    with pytest.raises(VoucherVoid):
        service.use_voucher(first.code, "S1", now=T0 + timedelta(days=7))


def test_a_cancellation_returns_what_was_paid_even_after_the_reward_changed(ctx):
    member_id = member_with("500.00")
    reward = new_reward(stock=4)
    redemption = redeem(member_id, reward.id, quantity=2).record
    service.update_reward(reward.id, {"points_cost": D("150.00"), "stock": 10, "active": False},
                          actor="marketing test", now=T0)

    cancelled = service.cancel_redemption(redemption.id, actor="app test", now=T0).record

    assert cancelled.points_returned == D(200)
    assert balances(member_id)[0] == D(500)
    assert stock(reward.id) == 12  # the units come back on top of what marketing set


def test_cancelling_an_unknown_redemption_is_not_found(ctx):
    with pytest.raises(NotFound):
        service.cancel_redemption(999, actor="app test", now=T0)


def test_cancelling_while_in_debt_pays_the_debt_first(ctx):
    member = factories.member(now=T0)
    purchase = factories.purchase(member.id, "100.00", now=T0).record
    redemption = redeem(member.id, new_reward().id).record
    points.refund_purchase(purchase.id, "S1", "RF1", D("100.00"), now=T0)
    assert balances(member.id) == (D(-100), D(0), D(0), D(100))

    service.cancel_redemption(redemption.id, actor="app test", now=T0)

    assert balances(member.id) == (D(0), D(0), D(0), D(0))
    assert entries(member.id)[-1] == ("reverse", D(100))


def test_a_members_redemptions_newest_first_with_their_vouchers(ctx):
    member_id = member_with("1000.00")
    other_id = member_with("1000.00")
    reward = new_reward()
    first = redeem(member_id, reward.id, quantity=2).record
    second = redeem(member_id, reward.id).record.id
    third = redeem(member_id, reward.id).record.id
    redeem(other_id, reward.id)
    service.use_voucher(first.vouchers[1].code, "S1", now=T0)

    page, cursor = service.member_redemptions(member_id, limit=2)
    rest, end = service.member_redemptions(member_id, limit=2, cursor=cursor)

    assert [r.id for r in page] == [third, second] and cursor is not None
    assert [r.id for r in rest] == [first.id] and end is None
    assert [(r.status, [v.status for v in r.vouchers]) for r in page + rest] == \
        [("completed", ["issued"]), ("completed", ["issued"]), ("completed", ["issued", "used"])]
    with pytest.raises(NotFound):
        service.member_redemptions(999)


def test_a_cancelled_redemption_is_listed_with_its_void_and_used_vouchers(ctx):
    member_id = member_with("1000.00")
    redemption = redeem(member_id, new_reward().id, quantity=2).record
    service.use_voucher(redemption.vouchers[0].code, "S1", now=T0)
    service.cancel_redemption(redemption.id, actor="app test", now=T0)

    [listed], _ = service.member_redemptions(member_id)

    assert (listed.status, [v.status for v in listed.vouchers]) == ("cancelled", ["used", "void"])
