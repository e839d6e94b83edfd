"""A tier bought and returned is not kept (issue 14): a refund that takes the window below the tier
an upgrade since its purchase reached undoes that upgrade at once, in the refund's transaction,
with a history entry naming the purchase; a tier earned otherwise is not touched."""
import json
from datetime import date, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from loyalty.extensions import db
from loyalty.members import jobs as member_jobs
from loyalty.members.models import Member
from loyalty.points import service as points
from loyalty.tiers import service as tiers
from loyalty.tiers.models import TierChange
from loyalty.webhooks import service as webhooks
from loyalty.webhooks.models import Event
from tests import factories
from tests.factories import D
from tests.service.ledger_helpers import T0, assert_ledger_ok, utc

pytestmark = pytest.mark.usefixtures("ctx")

HOUR = timedelta(hours=1)


def member_row(member_id):
    return db.session.scalars(sa.select(Member).where(Member.id == member_id)
                              .execution_options(populate_existing=True)).one()


def history(member_id):
    return [(c.from_code, c.to_code, c.reason, c.purchase_id) for c in db.session.scalars(
        sa.select(TierChange).where(TierChange.member_id == member_id).order_by(TierChange.id))]


def refund(purchase, amount, refund_no="F1", now=T0 + HOUR):
    return points.refund_purchase(purchase.id, purchase.store_id, refund_no, D(amount), now=now)


def test_a_full_refund_of_the_purchase_that_made_a_member_gold_undoes_gold_at_once():
    member = factories.member(now=T0)
    bought = factories.purchase(member.id, "10000.00", now=T0).record
    assert member_row(member.id).tier_code == "gold"

    outcome = refund(bought, "10000.00")

    assert outcome.member.tier_code == "ordinary"
    row = member_row(member.id)
    assert (row.tier_code, row.tier_since, row.tier_held_until) == ("ordinary", member.joined_at, None)
    assert history(member.id) == [("ordinary", "gold", "upgrade", bought.id),
                                  ("gold", "ordinary", "refund", bought.id)]
    view = tiers.member_tier(member.id, now=T0 + HOUR)
    assert view["history"][0]["reason"] == "refund" and view["history"][0]["purchase_id"] == bought.id
    assert "refunded" in view["history"][0]["note"] and bought.receipt_no in view["history"][0]["note"]
    assert view["valid_until"] is None
    assert_ledger_ok()


def test_the_birthday_job_pays_the_gift_of_the_tier_kept_not_of_the_tier_returned():
    returned = factories.member(birthday=date(1990, 3, 11), now=T0)
    kept = factories.member(birthday=date(1991, 3, 11), now=T0)
    refund(factories.purchase(returned.id, "10000.00", now=T0).record, "10000.00")
    factories.purchase(kept.id, "10000.00", now=T0)
    db.session.remove()

    result = member_jobs.birthday_bonus(date(2026, 3, 11), now=utc(2026, 3, 10, 17))

    assert result["gifts"] == 1
    gifts = dict(db.session.execute(sa.text(
        "SELECT member_id, points FROM ledger_entries WHERE reference_type = 'birthday'")).all())
    assert gifts == {kept.id: 5000}  # gold's 50.00 points, stored in hundredths; nothing for the other


def test_a_partial_refund_that_leaves_the_window_in_the_tier_changes_nothing():
    member = factories.member(now=T0)
    bought = factories.purchase(member.id, "12000.00", now=T0).record

    refund(bought, "1500.00")

    assert member_row(member.id).tier_code == "gold"
    assert [h[2] for h in history(member.id)] == ["upgrade"]


def test_a_partial_refund_leaves_the_tier_the_window_still_earns_with_the_upgrades_protection():
    member = factories.member(now=T0)
    bought = factories.purchase(member.id, "12000.00", now=T0).record

    refund(bought, "7000.00", now=T0 + timedelta(days=3))

    row = member_row(member.id)
    assert row.tier_code == "silver"
    assert row.tier_since == T0
    assert row.tier_held_until == tiers.protected_until(date(2026, 3, 10))
    assert history(member.id)[-1] == ("gold", "silver", "refund", bought.id)
    # a second partial refund that takes the window below silver too
    refund(bought, "3000.00", refund_no="F2", now=T0 + timedelta(days=4))
    assert member_row(member.id).tier_code == "ordinary"
    assert history(member.id)[-1] == ("silver", "ordinary", "refund", bought.id)
    assert_ledger_ok()


def test_the_member_goes_back_to_the_tier_they_had_with_its_own_protection():
    member = factories.member(now=T0 - timedelta(days=20))
    factories.purchase(member.id, "3500.00", now=T0 - timedelta(days=10))  # silver, earned
    bought = factories.purchase(member.id, "8000.00", now=T0).record  # gold

    refund(bought, "8000.00")

    row = member_row(member.id)
    assert row.tier_code == "silver"
    assert row.tier_since == T0 - timedelta(days=10)
    assert row.tier_held_until == tiers.protected_until(date(2026, 2, 28))
    assert [h[:3] for h in history(member.id)] == [("ordinary", "silver", "upgrade"), ("silver", "gold", "upgrade"),
                                                   ("gold", "silver", "refund")]


def test_of_two_purchases_refunding_the_first_undoes_the_upgrade_the_second_crossed_with_it():
    member = factories.member(now=T0)
    first = factories.purchase(member.id, "2000.00", now=T0).record
    second = factories.purchase(member.id, "9000.00", now=T0 + timedelta(minutes=1)).record  # gold at 11 000
    assert history(member.id) == [("ordinary", "gold", "upgrade", second.id)]

    refund(first, "2000.00")

    # before that purchase the member was ordinary; the window (9 000) still earns silver
    assert member_row(member.id).tier_code == "silver"
    assert history(member.id)[-1] == ("gold", "silver", "refund", first.id)


def test_of_two_purchases_refunding_the_second_goes_back_to_where_the_member_was():
    member = factories.member(now=T0)
    factories.purchase(member.id, "2000.00", now=T0)
    second = factories.purchase(member.id, "9000.00", now=T0 + timedelta(minutes=1)).record

    refund(second, "9000.00")

    assert member_row(member.id).tier_code == "ordinary"


def test_a_refund_of_a_purchase_made_before_the_tier_was_reached_by_activities_changes_nothing():
    tier = next(t for t in tiers.read_ladder() if t.code == "silver")
    tiers.update_tier("silver", tier.name, {"spend": D("3000.00"), "activities": 3, "mode": "any"},
                      {"earn_multiplier": tier.earn_multiplier, "birthday_points": tier.birthday_points,
                       "service_level": tier.service_level, "perks": tier.perks}, "test", now=T0)
    member = factories.member(now=T0)
    bought = factories.purchase(member.id, "1000.00", now=T0).record
    for day in range(3):
        points.record_activity(member.id, "sign_in", f"d{day}", now=T0 + timedelta(days=day))
    assert member_row(member.id).tier_code == "silver"

    refund(bought, "1000.00", now=T0 + timedelta(days=3))

    assert member_row(member.id).tier_code == "silver"
    assert [h[2] for h in history(member.id)] == ["upgrade"]


def test_a_manual_tier_set_after_the_purchase_is_not_touched():
    member = factories.member(now=T0)
    bought = factories.purchase(member.id, "10000.00", now=T0).record
    tiers.set_member_tier(member.id, "diamond", "VIP", "admin test", guaranteed_until=date(2026, 12, 31),
                          now=T0 + timedelta(minutes=30))

    refund(bought, "10000.00")

    assert member_row(member.id).tier_code == "diamond"


def test_a_guarantee_is_a_floor_for_an_undone_upgrade():
    member = factories.member(now=T0)
    tiers.set_member_tier(member.id, "silver", "welcome", "admin test", guaranteed_until=date(2026, 12, 31),
                          now=T0 - timedelta(minutes=30))
    bought = factories.purchase(member.id, "10000.00", now=T0).record  # gold

    refund(bought, "10000.00")

    assert member_row(member.id).tier_code == "silver"


def test_a_refund_of_a_purchase_outside_the_window_changes_no_tier():
    member = factories.member(now=T0 - timedelta(days=400))
    old = factories.purchase(member.id, "3500.00", now=T0 - timedelta(days=380)).record  # silver then
    tiers.set_member_tier(member.id, "silver", "kept", "admin test", now=T0 - timedelta(days=1))

    refund(old, "3500.00")

    assert member_row(member.id).tier_code == "silver"


def test_the_undo_is_told_to_webhook_subscribers():
    webhooks.create_subscription({"url": "https://crm.example/hooks", "events": ["tier.changed"],
                                  "secret": "a-secret-of-16-chars"}, actor="admin test", now=T0)
    member = factories.member(now=T0)
    refund(factories.purchase(member.id, "10000.00", now=T0).record, "10000.00")

    told = [json.loads(e.body, parse_float=Decimal) for e in db.session.scalars(
        sa.select(Event).where(Event.type == "tier.changed").order_by(Event.created_at, Event.id))]
    assert [(e["data"]["from"], e["data"]["to"], e["data"]["reason"]) for e in told] == [
        ("ordinary", "gold", "upgrade"), ("gold", "ordinary", "refund")]
