"""Tiers against a real database: upgrades in the purchase's transaction, the multiplier from the
next purchase, the nightly recompute (protection, one tier at a time, guarantees, idempotence),
refunds lowering the window, and the progress a member sees."""
from datetime import date, timedelta
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from loyalty.api.schemas.members import MemberSchema
from loyalty.errors import NotFound, ValidationFailed
from loyalty.extensions import db
from loyalty.members.models import Member
from loyalty.points import service as points
from loyalty.tiers import jobs as tier_jobs
from loyalty.tiers import service as tiers
from loyalty.tiers.models import TierChange
from tests import factories
from tests.factories import D
from tests.service.ledger_helpers import T0, assert_ledger_ok, utc

pytestmark = pytest.mark.usefixtures("ctx")

DAY0 = date(2026, 3, 10)  # T0's local day


def new_member(**fields):
    """Only the id: a recompute ends the session, and the objects of a session that ended are gone."""
    return SimpleNamespace(id=factories.member(**fields).id)


def tier_of(member_id):
    return db.session.scalar(sa.select(Member.tier_code).where(Member.id == member_id))


def history(member_id):
    return [(c.from_code, c.to_code, c.reason) for c in db.session.scalars(
        sa.select(TierChange).where(TierChange.member_id == member_id).order_by(TierChange.id))]


def recompute(day, **kwargs):
    result = tier_jobs.recompute_tiers(day, now=kwargs.pop("now", None) or utc(day.year, day.month, day.day, 18),
                                   **kwargs)
    db.session.remove()
    return result


def edit_tier(code, **changes):
    tier = next(t for t in tiers.read_ladder() if t.code == code)
    document = tiers.tier_document(tier)
    qualification = {"spend": D(document["qualification"]["spend"]),
                     "activities": document["qualification"]["activities"],
                     "mode": document["qualification"]["mode"]}
    benefits = {"earn_multiplier": D(document["benefits"]["earn_multiplier"]),
                "birthday_points": D(document["benefits"]["birthday_points"]),
                "service_level": document["benefits"]["service_level"],
                "perks": document["benefits"]["perks"]}
    for key, value in changes.items():
        (qualification if key in qualification else benefits)[key] = value
    return tiers.update_tier(code, changes.get("name", tier.name), qualification, benefits, "test", now=T0)


# --- upgrades at once ------------------------------------------------------------------------------

def test_the_purchase_that_crosses_a_threshold_upgrades_in_its_own_answer():
    member = new_member(now=T0)
    factories.purchase(member.id, "2999.99", now=T0)
    assert tier_of(member.id) == "ordinary"

    outcome = factories.purchase(member.id, "0.01", now=T0)

    assert outcome.member.tier_code == "silver"
    assert MemberSchema().dump(outcome.member)["tier"] == {"code": "silver", "name": "白银"}
    assert tier_of(member.id) == "silver"
    assert history(member.id) == [("ordinary", "silver", "upgrade")]
    assert_ledger_ok()


def test_one_big_purchase_skips_straight_to_diamond():
    member = new_member(now=T0)

    factories.purchase(member.id, "35000.00", now=T0)

    assert tier_of(member.id) == "diamond"
    assert history(member.id) == [("ordinary", "diamond", "upgrade")]


def test_the_new_multiplier_applies_from_the_next_purchase():
    member = new_member(now=T0)

    crossing = factories.purchase(member.id, "3000.00", now=T0)
    after = factories.purchase(member.id, "100.00", now=T0 + timedelta(minutes=1))

    assert crossing.record.points_earned == D("3000.00")  # earned at ordinary's 1
    assert after.record.points_earned == D("120.00")  # silver's 1.2
    assert_ledger_ok()


def test_a_changed_multiplier_applies_to_the_next_purchase():
    member = new_member(now=T0)
    factories.purchase(member.id, "3000.00", now=T0)
    edit_tier("silver", earn_multiplier=D("1.25"))

    assert factories.purchase(member.id, "10.00", now=T0).record.points_earned == D("12.50")


def test_activities_can_upgrade_when_the_tier_counts_them():
    edit_tier("silver", activities=2, mode="any")
    member = new_member(now=T0)

    points.record_activity(member.id, "sign_in", "day-1", now=T0)
    assert tier_of(member.id) == "ordinary"
    outcome = points.record_activity(member.id, "share", "post-1", now=T0)

    assert outcome.member.tier_code == "silver"


def test_activities_stopped_by_a_cap_do_not_count():
    edit_tier("silver", activities=2, mode="any")
    member = new_member(now=T0)

    points.record_activity(member.id, "sign_in", "morning", now=T0)
    capped = points.record_activity(member.id, "sign_in", "evening", now=T0)  # 1 a day

    assert capped.record.capped is True
    assert tier_of(member.id) == "ordinary"
    assert tiers.qualifying(member.id, T0)[1] == 1


def test_a_replayed_purchase_upgrades_no_one_twice():
    member = new_member(now=T0)
    factories.purchase(member.id, "5000.00", receipt_no="R1", now=T0)
    factories.purchase(member.id, "5000.00", receipt_no="R1", now=T0)

    assert history(member.id) == [("ordinary", "silver", "upgrade")]


def test_spend_older_than_the_window_does_not_count():
    member = new_member(now=T0 - timedelta(days=400))
    factories.purchase(member.id, "2500.00", now=T0 - timedelta(days=370),
                       occurred_at=T0 - timedelta(days=370))
    factories.purchase(member.id, "600.00", now=T0)

    assert tier_of(member.id) == "ordinary"
    assert tiers.qualifying(member.id, T0)[0] == D("600.00")


def test_refunds_lower_the_qualifying_spend_but_downgrade_no_one_whose_tier_they_did_not_buy():
    member = new_member(now=T0)
    factories.purchase(member.id, "3500.00", now=T0)
    later = factories.purchase(member.id, "500.00", now=T0 + timedelta(minutes=5)).record

    points.refund_purchase(later.id, "S1", "F1", D("500.00"), now=T0 + timedelta(hours=1))

    assert tiers.qualifying(member.id, T0 + timedelta(hours=1))[0] == D("3500.00")
    assert tier_of(member.id) == "silver"
    assert_ledger_ok()


def test_points_payments_are_not_spend():
    member = new_member(now=T0)
    factories.purchase(member.id, "2900.00", now=T0)
    points.pay_with_points(member.id, "S1", "P1", D("2900"), now=T0)

    assert tiers.qualifying(member.id, T0)[0] == D("2900.00")
    assert tier_of(member.id) == "ordinary"


# --- the recompute ---------------------------------------------------------------------------------

def test_the_recompute_keeps_a_tier_through_its_protection_period():
    member = new_member(now=T0)
    factories.purchase(member.id, "12000.00", now=T0)  # gold, protected through 2027-03-10

    # A year and a bit later the purchase has left the window, but the tier is protected.
    assert recompute(date(2027, 3, 10)) == {"members": 1, "upgraded": 0, "downgraded": 0}
    assert tier_of(member.id) == "gold"

    assert recompute(date(2027, 3, 11))["downgraded"] == 1
    assert tier_of(member.id) == "silver"
    assert history(member.id)[-1] == ("gold", "silver", "downgrade")


def test_the_recompute_drops_one_tier_a_night():
    member = new_member(now=T0)
    factories.purchase(member.id, "40000.00", now=T0)

    recompute(date(2027, 4, 1))
    assert tier_of(member.id) == "gold"
    recompute(date(2027, 4, 2))
    assert tier_of(member.id) == "silver"
    recompute(date(2027, 4, 3))
    recompute(date(2027, 4, 4))
    assert tier_of(member.id) == "ordinary"
    assert [to for _, to, _ in history(member.id)] == ["diamond", "gold", "silver", "ordinary"]


def test_the_recompute_never_drops_below_what_the_window_earns():
    member = new_member(now=T0)
    factories.purchase(member.id, "40000.00", now=T0)
    factories.purchase(member.id, "11000.00", now=utc(2027, 3, 1), occurred_at=utc(2027, 3, 1))

    recompute(date(2027, 4, 1))
    recompute(date(2027, 4, 2))

    assert tier_of(member.id) == "gold"


def test_a_second_recompute_of_the_same_day_changes_nothing():
    members = [new_member(now=T0) for _ in range(3)]
    factories.purchase(members[0].id, "40000.00", now=T0)
    factories.purchase(members[1].id, "12000.00", now=T0)

    first = recompute(date(2027, 4, 1))
    changes = history(members[0].id) + history(members[1].id)
    second = recompute(date(2027, 4, 1), now=utc(2027, 4, 1, 19))

    assert first == {"members": 3, "upgraded": 0, "downgraded": 2}
    assert second == {"members": 3, "upgraded": 0, "downgraded": 0}
    assert history(members[0].id) + history(members[1].id) == changes


def test_the_recompute_upgrades_members_a_lowered_threshold_now_admits():
    member = new_member(now=T0)
    factories.purchase(member.id, "2500.00", now=T0)
    edit_tier("silver", spend=D("2000.00"))

    assert recompute(DAY0)["upgraded"] == 1
    assert tier_of(member.id) == "silver"
    assert history(member.id) == [("ordinary", "silver", "upgrade")]


def test_the_recompute_respects_a_refund_once_protection_ends():
    member = new_member(now=T0)
    tiers.set_member_tier(member.id, "silver", "welcome offer", "test", now=T0)  # not bought: kept
    purchase = factories.purchase(member.id, "3500.00", now=T0).record
    points.refund_purchase(purchase.id, "S1", "F1", D("1000.00"), now=T0 + timedelta(days=1))
    factories.purchase(member.id, "10.00", now=utc(2027, 3, 1))  # still buying, but not enough

    recompute(date(2027, 3, 9))
    assert tier_of(member.id) == "silver"  # protected through 2027-03-10
    recompute(date(2027, 3, 11))
    assert tier_of(member.id) == "ordinary"


def test_the_recompute_works_in_batches(app):
    members = [new_member(now=T0) for _ in range(7)]
    for m in members[::2]:
        factories.purchase(m.id, "3000.00", now=T0)
    edit_tier("silver", spend=D("3500.00"))

    result = recompute(date(2027, 3, 20), batch_size=2)

    assert result == {"members": 7, "upgraded": 0, "downgraded": 4}
    assert {tier_of(m.id) for m in members} == {"ordinary"}


def test_closed_members_are_left_alone():
    member = new_member(now=T0)
    factories.purchase(member.id, "12000.00", now=T0)
    db.session.get(Member, member.id).status = "closed"
    db.session.commit()

    assert recompute(date(2027, 4, 1))["downgraded"] == 0


def test_the_recompute_of_an_empty_programme_is_quick_to_say_so():
    assert recompute(DAY0) == {"members": 0, "upgraded": 0, "downgraded": 0}


# --- by hand -------------------------------------------------------------------------------------

def test_an_admin_guarantee_holds_past_the_protection_period():
    member = new_member(now=T0)
    tiers.set_member_tier(member.id, "gold", "Key account", "admin:1", guaranteed_until=date(2027, 6, 30),
                          now=T0)

    recompute(date(2027, 6, 30))
    assert tier_of(member.id) == "gold"
    recompute(date(2027, 7, 1))
    assert tier_of(member.id) == "silver"
    assert history(member.id) == [("ordinary", "gold", "manual"), ("gold", "silver", "downgrade")]


def test_a_manual_tier_is_audited_and_in_history_with_its_reason():
    from loyalty.audit import AuditEntry

    member = new_member(now=T0)
    tiers.set_member_tier(member.id, "diamond", "Compensation for a lost parcel", "admin:7", now=T0)

    [change] = db.session.scalars(sa.select(TierChange).where(TierChange.member_id == member.id)).all()
    assert (change.reason, change.note, change.actor) == ("manual", "Compensation for a lost parcel", "admin:7")
    [entry] = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "member.tier.set")).all()
    assert entry.before["tier"] == "ordinary" and entry.after["tier"] == "diamond"


def test_a_manual_tier_must_exist_and_a_guarantee_must_not_be_past():
    member = new_member(now=T0)
    with pytest.raises(ValidationFailed):
        tiers.set_member_tier(member.id, "platinum", "x", "admin:1", now=T0)
    with pytest.raises(ValidationFailed):
        tiers.set_member_tier(member.id, "gold", "x", "admin:1", guaranteed_until=date(2026, 3, 9), now=T0)
    with pytest.raises(NotFound):
        tiers.set_member_tier(999_999, "gold", "x", "admin:1", now=T0)
    assert tier_of(member.id) == "ordinary"
    assert history(member.id) == []


# --- what the member sees ------------------------------------------------------------------------

def test_progress_says_what_the_next_tier_and_keeping_this_one_need():
    member = new_member(now=T0)
    factories.purchase(member.id, "4200.50", now=T0)
    points.record_activity(member.id, "sign_in", "d1", now=T0)

    view = tiers.member_tier(member.id, now=T0 + timedelta(hours=1))

    assert view["tier"]["code"] == "silver"
    assert view["since"] == T0
    assert view["valid_until"] == utc(2027, 3, 10, 16)  # through the anniversary, local time
    assert view["qualifying"] == {"spend": D("4200.50"), "activities": 1, "window_start": utc(2025, 3, 10, 16)}
    assert view["keep"] == {"spend_needed": D("0.00"), "activities_needed": 0}
    assert view["next"]["code"] == "gold"
    assert (view["next"]["spend_needed"], view["next"]["activities_needed"]) == (D("5799.50"), 0)
    assert [(h["from"], h["to"], h["reason"]) for h in view["history"]] == [("ordinary", "silver", "upgrade")]


def test_at_the_top_there_is_no_next_tier():
    member = new_member(now=T0)
    factories.purchase(member.id, "30000.00", now=T0)

    assert tiers.member_tier(member.id, now=T0)["next"] is None


def test_a_ladder_that_would_not_rise_is_refused_and_nothing_changes():
    with pytest.raises(ValidationFailed) as refused:
        edit_tier("gold", spend=D("1000.00"))
    assert "gold" in refused.value.message
    db.session.remove()
    assert next(t for t in tiers.read_ladder() if t.code == "gold").spend == D("10000.00")
