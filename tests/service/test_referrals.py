"""Referrals (issue #5) at the service level, every clock explicit (`now=`).

A campaign is marketing's terms; a member registered (or `apply_code`d) with someone's code is a
pending referral under the campaign running then, with that campaign's terms copied. The
referee's first purchase settles it: qualified (both rewarded with `bonus` entries naming the
referral, in the purchase's own transaction), missed (too small) or expired (too late; the
`referrals.expire` job does the same for those who never buy). A refund below the minimum within
the return window claws both rewards back. Ambassadors (推荐大使) get a badge and a bonus, once.
"""
from datetime import timedelta

import pytest
import sqlalchemy as sa

from loyalty import clock
from loyalty.audit import AuditEntry
from loyalty.errors import Conflict, ValidationFailed
from loyalty.extensions import db
from loyalty.members import service as members
from loyalty.members.models import Member
from loyalty.points import service as points
from loyalty.points.models import Entry, Purchase
from loyalty.referrals import jobs as referral_jobs
from loyalty.referrals import service as referrals
from loyalty.referrals.models import Referral, ReferralCampaign
from tests import factories
from tests.factories import D
from tests.service.ledger_helpers import T0, assert_ledger_ok, balances, entries

pytestmark = pytest.mark.usefixtures("ctx")

DAY = timedelta(days=1)
LINK = "https://shop.example/join?ref={code}"
STARTED = T0 - 10 * DAY  # the default campaign has been running for ten days at T0


# --- helpers --------------------------------------------------------------------------------------

def terms(**changes):
    fields = {"name": "Bring a friend", "starts_at": STARTED, "ends_at": None,
              "referrer_points": D(100), "referee_points": D(50), "min_first_purchase": D("100.00"),
              "qualify_within_days": 30, "link_template": LINK}
    fields.update(changes)
    return fields


def start_campaign(**changes):
    return referrals.create_campaign(terms(**changes), actor="test marketing", now=STARTED)


def referee_of(referrer, at=T0, **fields):
    return factories.member(referral_code=referrer.referral_code, now=at, **fields)


def pair(at=T0):
    """A referrer (joined a day earlier) and the member they referred at `at`: their ids."""
    referrer = factories.member(now=at - DAY)
    return referrer.id, referee_of(referrer, at=at).id


def referral_of(referee_id):
    return db.session.scalar(sa.select(Referral).where(Referral.referee_id == referee_id)
                             .execution_options(populate_existing=True))


def member(member_id):
    return db.session.get(Member, member_id, populate_existing=True)


def buy(member_id, amount, at, receipt_no=None):
    return factories.purchase(member_id, amount, receipt_no=receipt_no, now=at).record


def refund(purchase, amount, at, refund_no="RF-1"):
    return points.refund_purchase(purchase.id, purchase.store_id, refund_no, D(amount), now=at).record


def named_entries(member_id):
    """The member's entries that name a referral or an ambassador title, oldest first, as
    (type, points, reference type, reference id)."""
    rows = db.session.scalars(sa.select(Entry).where(
        Entry.member_id == member_id, Entry.reference_type.in_(("referral", "ambassador")))
        .order_by(Entry.id))
    return [(e.type, e.points, e.reference_type, int(e.reference_id)) for e in rows]


def available(member_id):
    return balances(member_id)[0]


def members_count():
    return db.session.scalar(sa.select(sa.func.count()).select_from(Member))


def stats(campaign):
    return referrals.campaign_stats(campaign.id)


# --- campaigns ------------------------------------------------------------------------------------

def test_a_campaign_keeps_its_terms_defaults_and_is_audit_logged():
    campaign = start_campaign(max_rewards_per_referrer=5, ambassador_threshold=3,
                              ambassador_bonus_points=D(500))

    stored = db.session.get(ReferralCampaign, campaign.id, populate_existing=True)
    assert (stored.referrer_points, stored.referee_points, stored.min_first_purchase) == (D(100), D(50), D(100))
    assert stored.return_window_days == 30  # the default
    assert (stored.max_rewards_per_referrer, stored.ambassador_threshold) == (5, 3)
    assert stored.starts_at == STARTED and stored.ends_at is None
    [audit] = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "referral_campaign.create"))
    assert (audit.actor, audit.entity_type, audit.entity_id, audit.before) == (
        "test marketing", "referral_campaign", str(campaign.id), None)
    assert D(audit.after["referrer_points"]) == D(100) and audit.after["link_template"] == LINK


@pytest.mark.parametrize("changes, field", [
    ({"ends_at": STARTED}, "ends_at"),
    ({"ends_at": STARTED - DAY}, "ends_at"),
    ({"link_template": "https://shop.example/join"}, "link_template"),
    ({"referrer_points": D(0), "referee_points": D(0)}, "referrer_points"),
])
def test_an_invalid_campaign_is_refused_and_nothing_is_stored(changes, field):
    with pytest.raises(ValidationFailed) as refused:
        start_campaign(**changes)

    assert field in refused.value.errors
    assert field in refused.value.message
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ReferralCampaign)) == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry)) == 0


@pytest.mark.parametrize("first, second", [
    ((STARTED, None), (STARTED + 30 * DAY, None)),  # the first never ends
    ((STARTED, STARTED + 30 * DAY), (STARTED + 29 * DAY, STARTED + 60 * DAY)),  # overlaps its end
    ((STARTED, STARTED + 30 * DAY), (STARTED - 5 * DAY, STARTED + 1 * DAY)),  # overlaps its start
    ((STARTED, STARTED + 30 * DAY), (STARTED + 5 * DAY, STARTED + 6 * DAY)),  # inside it
    ((STARTED, STARTED + 30 * DAY), (STARTED - 5 * DAY, None)),  # around it, open-ended
], ids=["open-ended", "end", "start", "inside", "around"])
def test_overlapping_campaigns_are_refused_with_409(first, second):
    existing = start_campaign(starts_at=first[0], ends_at=first[1])

    with pytest.raises(Conflict) as refused:
        start_campaign(name="Spring", starts_at=second[0], ends_at=second[1])

    assert refused.value.status == 409
    assert str(existing.id) in refused.value.message
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ReferralCampaign)) == 1


def test_campaigns_back_to_back_are_fine_and_the_one_running_is_the_active_one():
    winter = start_campaign(ends_at=STARTED + 30 * DAY)
    spring = start_campaign(name="Spring", starts_at=STARTED + 30 * DAY, ends_at=None)

    assert referrals.active_campaign(STARTED + 30 * DAY - timedelta(seconds=1)).id == winter.id
    assert referrals.active_campaign(STARTED + 30 * DAY).id == spring.id
    assert referrals.active_campaign(STARTED - timedelta(seconds=1)) is None


def test_a_patch_that_would_overlap_another_campaign_is_refused_and_changes_nothing():
    winter = start_campaign(ends_at=STARTED + 30 * DAY)
    start_campaign(name="Spring", starts_at=STARTED + 40 * DAY)

    with pytest.raises(Conflict):
        referrals.update_campaign(winter.id, {"ends_at": STARTED + 41 * DAY}, actor="test", now=T0)
    with pytest.raises(Conflict):
        referrals.update_campaign(winter.id, {"ends_at": None}, actor="test", now=T0)

    db.session.rollback()
    assert db.session.get(ReferralCampaign, winter.id, populate_existing=True).ends_at == STARTED + 30 * DAY
    # Its own dates never conflict with itself.
    referrals.update_campaign(winter.id, {"ends_at": STARTED + 40 * DAY}, actor="test", now=T0)
    assert db.session.get(ReferralCampaign, winter.id, populate_existing=True).ends_at == STARTED + 40 * DAY


def test_a_campaign_change_is_audit_logged_with_before_and_after():
    campaign = start_campaign()

    referrals.update_campaign(campaign.id, {"referrer_points": D(300)}, actor="test marketing", now=T0)

    [audit] = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "referral_campaign.update"))
    assert (D(audit.before["referrer_points"]), D(audit.after["referrer_points"])) == (D(100), D(300))
    assert audit.entity_id == str(campaign.id)


# --- codes at registration ------------------------------------------------------------------------

def test_a_member_registered_with_a_code_is_a_pending_referral_under_the_active_campaign():
    campaign = start_campaign(return_window_days=14)
    referrer = factories.member(now=T0 - DAY)

    referee = factories.member(referral_code=f"  {referrer.referral_code.lower()} ", now=T0)

    referral = referral_of(referee.id)
    assert member(referee.id).referred_by_id == referrer.id
    assert (referral.campaign_id, referral.referrer_id, referral.status) == (campaign.id, referrer.id, "pending")
    assert (referral.referrer_points, referral.referee_points, referral.min_first_purchase) == (D(100), D(50), D(100))
    assert referral.deadline == T0 + 30 * DAY
    assert referral.return_window_days == 14
    assert entries(referee.id) == [] and entries(referrer.id) == []  # nothing before the first purchase
    info = referrals.member_referral(referrer.id)
    assert (info["invited"], info["pending"], info["qualified"], info["ambassador"]) == (1, 1, 0, False)


def test_every_member_has_a_permanent_code_of_their_own():
    start_campaign()
    first, second = factories.member(now=T0), factories.member(now=T0)
    code = first.referral_code

    referee_of(first)
    points.adjust_points(first.id, D(10), "goodwill", actor="test", now=T0)

    assert first.referral_code != second.referral_code
    assert member(first.id).referral_code == code
    assert referrals.member_referral(first.id)["link"] == LINK.replace("{code}", code)


def test_an_unknown_code_is_refused_and_nobody_is_registered():
    start_campaign()
    before = members_count()

    with pytest.raises(ValidationFailed) as refused:
        factories.member(referral_code="ZZZZZZZZ", now=T0)

    assert refused.value.errors == {"referral_code": ["Unknown referral code."]}
    assert members_count() == before


@pytest.mark.parametrize("campaign_dates", [
    None,  # no campaign at all
    (T0 + DAY, None),  # not started yet
    (T0 - 30 * DAY, T0 - DAY),  # over
    (T0 - 30 * DAY, T0),  # ends at this very instant
], ids=["no-campaign", "not-started", "ended", "ending-now"])
def test_a_code_used_outside_any_campaign_is_refused_and_nobody_is_registered(campaign_dates):
    if campaign_dates:
        start_campaign(starts_at=campaign_dates[0], ends_at=campaign_dates[1])
    referrer = factories.member(now=T0 - 40 * DAY)
    before = members_count()

    with pytest.raises(ValidationFailed) as refused:
        referee_of(referrer)

    assert refused.value.status == 422
    assert "campaign" in refused.value.message
    assert "referral_code" in refused.value.errors
    assert members_count() == before
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Referral)) == 0


def test_a_code_works_from_the_instant_the_campaign_starts():
    start_campaign(starts_at=T0)
    referrer = factories.member(now=T0 - DAY)

    assert referral_of(referee_of(referrer, at=T0).id).status == "pending"


@pytest.mark.parametrize("referrer_fields, referee_fields", [
    ({"phone": "+8613900000001"}, {"phone": "+86 139 0000-0001"}),
    ({"phone": "+8613900000001", "email": "li@example.com"}, {"phone": "+8613900000002", "email": "LI@Example.com"}),
    ({"external_ids": [{"channel": "wechat", "id": "wx-li"}]},
     {"phone": "+8613900000002", "external_ids": [{"channel": "WeChat", "id": "wx-li"}]}),
], ids=["phone", "email", "channel-identity"])
def test_self_referral_by_phone_email_or_channel_identity_is_refused(referrer_fields, referee_fields):
    start_campaign()
    referrer = factories.member(now=T0 - DAY, **referrer_fields)
    before = members_count()

    with pytest.raises(ValidationFailed) as refused:
        referee_of(referrer, **referee_fields)

    assert refused.value.errors == {"referral_code": ["This is the member's own code."]}
    assert "own referral code" in refused.value.message
    assert members_count() == before


# --- apply_code: an existing member enters a code -------------------------------------------------

def test_an_existing_member_enters_a_code_before_buying_anything():
    start_campaign()
    referrer = factories.member(now=T0 - 5 * DAY)
    newcomer = factories.member(now=T0 - 2 * DAY)

    answer = referrals.apply_code(newcomer.id, referrer.referral_code.lower(), now=T0)

    assert answer.id == newcomer.id and answer.referred_by_id == referrer.id
    referral = referral_of(newcomer.id)
    assert (referral.referrer_id, referral.status, referral.deadline) == (referrer.id, "pending", T0 + 30 * DAY)
    buy(newcomer.id, "120.00", T0 + DAY)
    assert referral_of(newcomer.id).status == "qualified"
    assert available(referrer.id) == D(100)
    assert_ledger_ok()


def test_entering_a_code_twice_is_409_and_keeps_the_first_referrer():
    start_campaign()
    first, second = factories.member(now=T0 - 5 * DAY), factories.member(now=T0 - 5 * DAY)
    newcomer = factories.member(now=T0 - 2 * DAY)
    referrals.apply_code(newcomer.id, first.referral_code, now=T0)

    for code in (first.referral_code, second.referral_code):
        with pytest.raises(Conflict) as refused:
            referrals.apply_code(newcomer.id, code, now=T0 + DAY)
        assert refused.value.status == 409
        assert "already" in refused.value.message

    assert member(newcomer.id).referred_by_id == first.id
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Referral)) == 1


def test_a_member_registered_with_a_code_cannot_enter_another():
    start_campaign()
    referrer_id, referee_id = pair()
    other = factories.member(now=T0)

    with pytest.raises(Conflict):
        referrals.apply_code(referee_id, other.referral_code, now=T0 + DAY)

    assert referral_of(referee_id).referrer_id == referrer_id


def test_entering_a_code_after_a_purchase_is_409():
    start_campaign()
    referrer = factories.member(now=T0 - 5 * DAY)
    shopper = factories.member(now=T0 - 2 * DAY)
    buy(shopper.id, "20.00", T0 - DAY)

    with pytest.raises(Conflict) as refused:
        referrals.apply_code(shopper.id, referrer.referral_code, now=T0)

    assert "first purchase" in refused.value.message
    assert member(shopper.id).referred_by_id is None
    assert referral_of(shopper.id) is None


@pytest.mark.parametrize("case", ["own", "unknown", "no-campaign"])
def test_entering_an_invalid_code_is_422_and_changes_nothing(case):
    if case != "no-campaign":
        start_campaign()
    referrer = factories.member(now=T0 - 5 * DAY)
    newcomer = factories.member(now=T0 - 2 * DAY)
    code = {"own": newcomer.referral_code, "unknown": "ZZZZZZZZ", "no-campaign": referrer.referral_code}[case]

    with pytest.raises(ValidationFailed) as refused:
        referrals.apply_code(newcomer.id, code, now=T0)

    assert "referral_code" in refused.value.errors
    assert member(newcomer.id).referred_by_id is None
    assert referral_of(newcomer.id) is None


def test_a_member_without_any_identity_cannot_enter_their_own_code():
    start_campaign()
    loner = members.register_member("Nobody Known", now=T0 - DAY)  # no phone, email or channel identity

    with pytest.raises(ValidationFailed):
        referrals.apply_code(loner.id, loner.referral_code, now=T0)

    assert member(loner.id).referred_by_id is None


# --- the first purchase ---------------------------------------------------------------------------

def test_a_qualifying_first_purchase_rewards_both_with_bonus_entries_naming_the_referral():
    start_campaign()
    referrer_id, referee_id = pair()

    purchase = buy(referee_id, "150.00", T0 + 3 * DAY)

    referral = referral_of(referee_id)
    assert (referral.status, referral.purchase_id, referral.settled_at) == ("qualified", purchase.id, T0 + 3 * DAY)
    assert referral.referrer_rewarded is True and referral.points_granted == D(150)
    assert named_entries(referee_id) == [("bonus", D(50), "referral", referral.id)]
    assert named_entries(referrer_id) == [("bonus", D(100), "referral", referral.id)]
    assert entries(referee_id) == [("earn_purchase", D(150)), ("bonus", D(50))]
    assert balances(referee_id) == (D(200), D(0), D(200), D(0))
    assert balances(referrer_id) == (D(100), D(0), D(100), D(0))
    assert_ledger_ok()


def test_the_rewards_are_written_in_the_purchases_own_transaction(monkeypatch):
    """If anything after the referral step fails, the purchase and both rewards are rolled back
    together; the referral is still pending and the next first purchase qualifies it."""
    start_campaign()
    referrer_id, referee_id = pair()

    def boom(*args, **kwargs):
        raise RuntimeError("the till lost its connection")
    monkeypatch.setattr(points.tiers, "upgrade_if_qualified", boom)
    with pytest.raises(RuntimeError):
        buy(referee_id, "150.00", T0 + DAY, receipt_no="R-LOST")

    assert referral_of(referee_id).status == "pending"
    assert entries(referee_id) == [] and entries(referrer_id) == []
    monkeypatch.undo()
    purchase = buy(referee_id, "150.00", T0 + DAY, receipt_no="R-LOST")
    assert referral_of(referee_id).purchase_id == purchase.id
    stamps = {e.created_at for e in db.session.scalars(sa.select(Entry).where(
        Entry.member_id.in_((referrer_id, referee_id))))}
    assert stamps == {T0 + DAY}
    assert_ledger_ok()


def test_a_first_purchase_of_exactly_the_minimum_qualifies():
    start_campaign()
    referrer_id, referee_id = pair()

    buy(referee_id, "100.00", T0 + DAY)

    assert referral_of(referee_id).status == "qualified"
    assert available(referrer_id) == D(100)


def test_a_first_purchase_too_small_misses_and_later_purchases_do_not_qualify():
    campaign = start_campaign()
    referrer_id, referee_id = pair()

    buy(referee_id, "99.99", T0 + DAY)
    referral = referral_of(referee_id)
    assert (referral.status, referral.settled_at, referral.purchase_id) == ("missed", T0 + DAY, None)

    buy(referee_id, "500.00", T0 + 2 * DAY)
    buy(referee_id, "800.00", T0 + 3 * DAY)

    assert referral_of(referee_id).status == "missed"
    assert named_entries(referee_id) == [] and entries(referrer_id) == []
    assert entries(referee_id) == [("earn_purchase", D("99.99")), ("earn_purchase", D(500)), ("earn_purchase", D(800))]
    assert (stats(campaign)["missed"], stats(campaign)["qualified"], stats(campaign)["points_granted"]) == (1, 0, 0)
    assert_ledger_ok()


@pytest.mark.parametrize("after_deadline, status", [
    (-timedelta(minutes=1), "qualified"),
    (timedelta(0), "qualified"),  # the deadline itself is still in time
    (timedelta(minutes=1), "expired"),
])
def test_the_first_purchase_must_come_within_the_days_of_the_campaign(after_deadline, status):
    start_campaign(qualify_within_days=7)
    referrer_id, referee_id = pair()
    assert referral_of(referee_id).deadline == T0 + 7 * DAY

    buy(referee_id, "150.00", T0 + 7 * DAY + after_deadline)

    assert referral_of(referee_id).status == status
    rewarded = status == "qualified"
    assert available(referrer_id) == (D(100) if rewarded else D(0))
    assert available(referee_id) == D(150) + (D(50) if rewarded else D(0))
    assert_ledger_ok()


def test_a_purchase_after_the_deadline_expires_the_referral_and_nothing_later_qualifies():
    campaign = start_campaign(qualify_within_days=7)
    referrer_id, referee_id = pair()

    buy(referee_id, "150.00", T0 + 8 * DAY)
    buy(referee_id, "150.00", T0 + 9 * DAY)

    referral = referral_of(referee_id)
    assert (referral.status, referral.settled_at) == ("expired", T0 + 8 * DAY)
    assert entries(referrer_id) == [] and named_entries(referee_id) == []
    assert stats(campaign)["expired"] == 1


def test_only_the_referees_purchases_settle_the_referral():
    """The referrer buying, or some other member buying, leaves the referral pending."""
    start_campaign()
    referrer_id, referee_id = pair()
    stranger = factories.member(now=T0)

    buy(referrer_id, "500.00", T0 + DAY)
    buy(stranger.id, "500.00", T0 + DAY)

    assert referral_of(referee_id).status == "pending"
    assert named_entries(referrer_id) == []


# --- expiry job and CLI ---------------------------------------------------------------------------

def test_the_expiry_job_expires_pending_referrals_past_their_deadline_once():
    start_campaign(qualify_within_days=7)
    referrer = factories.member(now=T0 - DAY)
    late = referee_of(referrer, at=T0)  # deadline T0 + 7 days, 12:00 in Shanghai
    later = referee_of(referrer, at=T0 + 2 * DAY)  # deadline T0 + 9 days
    buyer = referee_of(referrer, at=T0)
    buy(buyer.id, "150.00", T0 + DAY)

    # The day before the deadline, and the deadline's own day run before the deadline: nothing.
    assert referral_jobs.expire_referrals((T0 + 6 * DAY).date(), now=T0 + 7 * DAY - timedelta(hours=1)) == {"expired": 0}
    # Run late for an earlier day: only what had passed by the end of that day expires.
    assert referral_jobs.expire_referrals((T0 + 6 * DAY).date(), now=T0 + 20 * DAY) == {"expired": 0}
    assert referral_of(late.id).status == "pending"

    assert referral_jobs.expire_referrals((T0 + 7 * DAY).date(), now=T0 + 7 * DAY + timedelta(hours=1)) == {"expired": 1}
    expired = referral_of(late.id)
    assert (expired.status, expired.settled_at) == ("expired", T0 + 7 * DAY + timedelta(hours=1))
    assert referral_of(later.id).status == "pending"
    assert referral_of(buyer.id).status == "qualified"
    # A second run for the same day changes nothing.
    assert referral_jobs.expire_referrals((T0 + 7 * DAY).date(), now=T0 + 7 * DAY + timedelta(hours=2)) == {"expired": 0}

    # Expired is final: a purchase afterwards is just a purchase.
    buy(late.id, "150.00", T0 + 7 * DAY + timedelta(hours=3))
    assert referral_of(late.id).status == "expired"
    assert named_entries(late.id) == []
    assert available(referrer.id) == D(100)  # the buyer's referral only


def test_the_expiry_job_runs_from_the_command_line(runner):
    campaign = start_campaign(qualify_within_days=7)
    referrer_id, referee_id = pair()
    db.session.commit()

    with clock.frozen_at(T0 + 7 * DAY + timedelta(hours=1)):
        result = runner.invoke(args=["jobs", "run", "referrals.expire", "--as-of", (T0 + 7 * DAY).date().isoformat()])

    assert result.exit_code == 0, result.output
    assert "referrals.expire" in result.output and "expired 1" in result.output
    assert referral_of(referee_id).status == "expired"
    assert stats(campaign)["expired"] == 1 and stats(campaign)["pending"] == 0


def test_the_expiry_job_is_registered_for_the_scheduler():
    from loyalty.jobs import registry

    job = registry.get("referrals.expire")
    assert job is not None and job.cron
    start_campaign(qualify_within_days=7)
    pair()
    assert job.total() == 1


# --- the referrer's cap ---------------------------------------------------------------------------

def test_over_the_referrers_cap_the_referee_is_rewarded_the_referrer_is_not_and_stats_say_so():
    campaign = start_campaign(max_rewards_per_referrer=2)
    referrer = factories.member(now=T0 - DAY)
    referees = [referee_of(referrer, at=T0 + n * timedelta(minutes=1)) for n in range(3)]

    for n, referee in enumerate(referees):
        buy(referee.id, "150.00", T0 + DAY + n * timedelta(minutes=1))

    assert [referral_of(r.id).referrer_rewarded for r in referees] == [True, True, False]
    assert all(available(r.id) == D(200) for r in referees)  # every referee got their 50
    assert [p for _, p, _, _ in named_entries(referrer.id)] == [D(100), D(100)]
    assert available(referrer.id) == D(200)
    assert referral_of(referees[2].id).points_granted == D(50)
    summary = stats(campaign)
    assert (summary["invited"], summary["qualified"], summary["rewarded"], summary["referrer_over_cap"]) == (3, 3, 2, 1)
    assert summary["points_granted"] == D(350)
    assert_ledger_ok()


def test_the_cap_counts_each_referrer_separately():
    start_campaign(max_rewards_per_referrer=1)
    first_id, first_referee = pair()
    second_id, second_referee = pair()

    buy(first_referee, "150.00", T0 + DAY)
    buy(second_referee, "150.00", T0 + DAY)

    assert available(first_id) == available(second_id) == D(100)


def test_a_campaign_that_rewards_only_the_new_member_has_nobody_over_a_cap():
    campaign = start_campaign(referrer_points=D(0), referee_points=D(80))
    referrer_id, referee_id = pair()

    buy(referee_id, "150.00", T0 + DAY)

    assert available(referee_id) == D(230) and available(referrer_id) == D(0)
    summary = stats(campaign)
    assert (summary["qualified"], summary["points_granted"]) == (1, D(80))
    assert summary["referrer_over_cap"] == 0


# --- ambassadors ----------------------------------------------------------------------------------

def test_an_ambassador_gets_the_title_badge_and_bonus_once():
    start_campaign(ambassador_threshold=2, ambassador_bonus_points=D(500))
    referrer = factories.member(now=T0 - DAY)
    first, second, third = (referee_of(referrer, at=T0) for _ in range(3))

    buy(first.id, "150.00", T0 + DAY)
    assert member(referrer.id).ambassador_since is None
    assert referrals.member_referral(referrer.id)["ambassador"] is False

    buy(second.id, "150.00", T0 + 2 * DAY)
    assert member(referrer.id).ambassador_since == T0 + 2 * DAY
    assert referrals.member_referral(referrer.id)["ambassador"] is True
    assert available(referrer.id) == D(700)

    buy(third.id, "150.00", T0 + 3 * DAY)
    assert member(referrer.id).ambassador_since == T0 + 2 * DAY  # given once
    assert named_entries(referrer.id) == [
        ("bonus", D(100), "referral", referral_of(first.id).id),
        ("bonus", D(100), "referral", referral_of(second.id).id),
        ("bonus", D(500), "ambassador", referrer.id),
        ("bonus", D(100), "referral", referral_of(third.id).id),
    ]
    assert available(referrer.id) == D(800)
    assert referrals.member_referral(referrer.id)["qualified"] == 3
    assert_ledger_ok()


def test_missed_and_pending_referrals_do_not_count_towards_the_title():
    start_campaign(ambassador_threshold=2, ambassador_bonus_points=D(500))
    referrer = factories.member(now=T0 - DAY)
    small, big, _waiting = (referee_of(referrer, at=T0) for _ in range(3))

    buy(small.id, "10.00", T0 + DAY)
    buy(big.id, "150.00", T0 + DAY)

    assert member(referrer.id).ambassador_since is None
    assert available(referrer.id) == D(100)


def test_referrals_over_the_cap_still_count_towards_the_title():
    start_campaign(max_rewards_per_referrer=1, ambassador_threshold=2, ambassador_bonus_points=D(300))
    referrer = factories.member(now=T0 - DAY)
    first, second = referee_of(referrer), referee_of(referrer)

    buy(first.id, "150.00", T0 + DAY)
    buy(second.id, "150.00", T0 + DAY)

    assert member(referrer.id).ambassador_since == T0 + DAY
    assert available(referrer.id) == D(400)  # one referral reward, then the bonus


def test_an_ambassador_is_not_made_again_by_a_later_campaign():
    first_campaign = start_campaign(ends_at=T0 + 10 * DAY, ambassador_threshold=1, ambassador_bonus_points=D(500))
    referrer = factories.member(now=T0 - DAY)
    buy(referee_of(referrer).id, "150.00", T0 + DAY)
    assert available(referrer.id) == D(600)

    second = referrals.create_campaign(terms(name="Summer", starts_at=T0 + 10 * DAY, ambassador_threshold=1,
                                             ambassador_bonus_points=D(900)), actor="test", now=T0)
    later = referee_of(referrer, at=T0 + 11 * DAY)
    buy(later.id, "150.00", T0 + 12 * DAY)

    assert referral_of(later.id).campaign_id == second.id != first_campaign.id
    assert member(referrer.id).ambassador_since == T0 + DAY
    assert available(referrer.id) == D(700)
    assert [p for _, p, kind, _ in named_entries(referrer.id) if kind == "ambassador"] == [D(500)]


# --- clawback -------------------------------------------------------------------------------------

@pytest.mark.parametrize("refunded, clawed", [
    ("150.00", True),  # the whole purchase
    ("50.01", True),  # 99.99 left: below the minimum
    ("50.00", False),  # exactly the minimum left
    ("10.00", False),  # well above it
])
def test_a_refund_within_the_return_window_claws_back_only_below_the_minimum(refunded, clawed):
    campaign = start_campaign()
    referrer_id, referee_id = pair()
    purchase = buy(referee_id, "150.00", T0 + DAY)

    refund(purchase, refunded, T0 + DAY + 29 * DAY)

    referral = referral_of(referee_id)
    reversed_points = D(refunded)  # the purchase's own points go back pro rata either way
    if clawed:
        assert (referral.status, referral.clawed_back_at) == ("clawed_back", T0 + 30 * DAY)
        assert named_entries(referee_id)[-1] == ("reverse", D(-50), "referral", referral.id)
        assert named_entries(referrer_id) == [("bonus", D(100), "referral", referral.id),
                                              ("reverse", D(-100), "referral", referral.id)]
        assert available(referee_id) == D(150) - reversed_points
        assert balances(referrer_id) == (D(0), D(0), D(0), D(0))
        assert stats(campaign)["clawed_back"] == 1
        assert (stats(campaign)["points_granted"], stats(campaign)["points_clawed_back"]) == (D(150), D(150))
    else:
        assert (referral.status, referral.clawed_back_at) == ("qualified", None)
        assert available(referee_id) == D(200) - reversed_points
        assert available(referrer_id) == D(100)
        assert stats(campaign)["clawed_back"] == 0
    assert_ledger_ok()


def test_a_refund_after_the_return_window_claws_nothing_back():
    start_campaign()
    referrer_id, referee_id = pair()
    purchase = buy(referee_id, "150.00", T0 + DAY)

    refund(purchase, "150.00", T0 + DAY + 30 * DAY + timedelta(minutes=1))

    assert referral_of(referee_id).status == "qualified"
    assert available(referee_id) == D(50)  # only the purchase's own 150 points went
    assert available(referrer_id) == D(100)
    assert [t for t, *_ in named_entries(referee_id)] == ["bonus"]
    assert_ledger_ok()


def test_refunds_adding_up_below_the_minimum_claw_back_once():
    start_campaign()
    referrer_id, referee_id = pair()
    purchase = buy(referee_id, "150.00", T0 + DAY)

    refund(purchase, "40.00", T0 + 2 * DAY, refund_no="RF-1")
    assert referral_of(referee_id).status == "qualified"
    refund(purchase, "20.00", T0 + 3 * DAY, refund_no="RF-2")  # 90.00 left
    assert referral_of(referee_id).status == "clawed_back"
    refund(purchase, "90.00", T0 + 4 * DAY, refund_no="RF-3")

    assert [p for t, p, *_ in named_entries(referrer_id)] == [D(100), D(-100)]
    assert [p for t, p, *_ in named_entries(referee_id)] == [D(50), D(-50)]
    assert balances(referee_id) == (D(0), D(0), D(0), D(0))
    assert_ledger_ok()


def test_a_clawback_of_spent_points_becomes_debt():
    start_campaign()
    referrer_id, referee_id = pair()
    purchase = buy(referee_id, "150.00", T0 + DAY)
    points.pay_with_points(referee_id, "S1", "PAY-1", D(200), now=T0 + 2 * DAY)
    points.pay_with_points(referrer_id, "S1", "PAY-2", D(60), now=T0 + 2 * DAY)

    refund(purchase, "150.00", T0 + 3 * DAY)

    assert balances(referee_id) == (D(-200), D(0), D(0), D(200))
    assert balances(referrer_id) == (D(-60), D(0), D(0), D(60))
    assert_ledger_ok()


def test_a_clawback_over_the_cap_takes_back_only_the_referees_reward():
    campaign = start_campaign(max_rewards_per_referrer=1)
    referrer = factories.member(now=T0 - DAY)
    first, second = referee_of(referrer), referee_of(referrer)
    buy(first.id, "150.00", T0 + DAY)
    purchase = buy(second.id, "150.00", T0 + DAY)

    refund(purchase, "150.00", T0 + 2 * DAY)

    assert referral_of(second.id).status == "clawed_back"
    assert (stats(campaign)["points_granted"], stats(campaign)["points_clawed_back"]) == (D(200), D(50))
    assert available(second.id) == D(0)
    assert available(referrer.id) == D(100)  # the first referral's reward stays; the second had none
    assert [p for _, p, *_ in named_entries(referrer.id)] == [D(100)]
    assert_ledger_ok()


def test_refunding_a_later_purchase_claws_nothing_back():
    start_campaign()
    referrer_id, referee_id = pair()
    buy(referee_id, "150.00", T0 + DAY)
    second = buy(referee_id, "300.00", T0 + 2 * DAY)

    refund(second, "300.00", T0 + 3 * DAY)

    assert referral_of(referee_id).status == "qualified"
    assert available(referrer_id) == D(100) and available(referee_id) == D(200)


# --- terms are kept -------------------------------------------------------------------------------

def test_a_referral_keeps_the_terms_it_was_made_under_after_the_campaign_is_changed():
    campaign = start_campaign()
    referrer = factories.member(now=T0 - DAY)
    old_terms = referee_of(referrer, at=T0)

    referrals.update_campaign(campaign.id, {
        "referrer_points": D(300), "referee_points": D(10), "min_first_purchase": D("500.00"),
        "qualify_within_days": 5, "return_window_days": 0}, actor="test marketing", now=T0 + DAY)
    new_terms = referee_of(referrer, at=T0 + DAY)
    assert referral_of(new_terms.id).deadline == T0 + 6 * DAY

    # 20 days on: past the new 5 days, within the old 30; 150.00 is below the new minimum.
    kept = buy(old_terms.id, "150.00", T0 + 20 * DAY)
    buy(new_terms.id, "150.00", T0 + 2 * DAY)

    assert referral_of(old_terms.id).status == "qualified"
    assert available(old_terms.id) == D(200)  # 150 + the old 50
    assert referral_of(new_terms.id).status == "missed"
    assert available(referrer.id) == D(100)  # the old 100, not 300
    # And the old 30-day return window, not the new 0 days.
    refund(kept, "150.00", T0 + 25 * DAY)
    assert referral_of(old_terms.id).status == "clawed_back"
    assert available(referrer.id) == D(0)
    assert_ledger_ok()


def test_lowering_the_cap_does_not_take_rewards_from_referrals_already_made():
    campaign = start_campaign(max_rewards_per_referrer=3)
    referrer = factories.member(now=T0 - DAY)
    made_under_three = [referee_of(referrer, at=T0) for _ in range(3)]

    referrals.update_campaign(campaign.id, {"max_rewards_per_referrer": 1}, actor="test marketing", now=T0 + DAY)
    made_under_one = referee_of(referrer, at=T0 + DAY)
    for n, referee in enumerate(made_under_three + [made_under_one]):
        buy(referee.id, "150.00", T0 + 2 * DAY + n * timedelta(minutes=1))

    assert [referral_of(r.id).referrer_rewarded for r in made_under_three] == [True, True, True]
    assert referral_of(made_under_one.id).referrer_rewarded is False  # its own terms: a cap of 1, reached
    assert available(referrer.id) == D(300)


def test_a_referral_keeps_its_campaign_after_the_campaign_ends():
    campaign = start_campaign()
    referrer_id, referee_id = pair()
    referrals.update_campaign(campaign.id, {"ends_at": T0 + DAY}, actor="test", now=T0 + DAY)

    buy(referee_id, "150.00", T0 + 5 * DAY)

    assert referral_of(referee_id).status == "qualified"
    assert available(referrer_id) == D(100)


# --- stats ----------------------------------------------------------------------------------------

def test_campaign_stats_count_each_outcome():
    campaign = start_campaign(max_rewards_per_referrer=2, qualify_within_days=7)
    referrer = factories.member(now=T0 - DAY)
    other = factories.member(now=T0 - DAY)
    rewarded = [referee_of(referrer) for _ in range(2)] + [referee_of(other)]
    over_cap = referee_of(referrer)
    missed = referee_of(other)
    expired = referee_of(other)
    pending = referee_of(other, at=T0 + 5 * DAY)
    for n, referee in enumerate(rewarded + [over_cap]):
        buy(referee.id, "150.00", T0 + DAY + n * timedelta(minutes=1))
    buy(missed.id, "20.00", T0 + DAY)
    referral_jobs.expire_referrals((T0 + 8 * DAY).date(), now=T0 + 8 * DAY)

    summary = stats(campaign)

    assert summary == {
        "campaign_id": campaign.id, "invited": 7, "pending": 1, "qualified": 4, "rewarded": 3,
        "referrer_over_cap": 1, "missed": 1, "expired": 1, "clawed_back": 0,
        "points_granted": D(3 * 150 + 50), "points_clawed_back": D(0), "conversion_rate": D("0.5714"),
    }
    assert referral_of(expired.id).status == "expired" and referral_of(pending.id).status == "pending"
    assert_ledger_ok()


def test_stats_of_a_campaign_without_referrals_are_zero():
    campaign = start_campaign()

    summary = stats(campaign)

    assert (summary["invited"], summary["qualified"], summary["points_granted"], summary["conversion_rate"]) == (
        0, 0, 0, 0)


def test_stats_count_only_their_own_campaign():
    winter = start_campaign(ends_at=T0 + DAY)
    referrer = factories.member(now=T0 - DAY)
    buy(referee_of(referrer, at=T0).id, "150.00", T0 + DAY)
    spring = referrals.create_campaign(terms(name="Spring", starts_at=T0 + DAY), actor="test", now=T0)
    referee_of(referrer, at=T0 + 2 * DAY)

    assert (stats(winter)["invited"], stats(winter)["qualified"]) == (1, 1)
    assert (stats(spring)["invited"], stats(spring)["qualified"]) == (1, 0)


def test_members_who_bought_before_any_referral_are_untouched():
    """A purchase by a member without a referral does nothing referral-related."""
    start_campaign()
    shopper = factories.member(now=T0)

    buy(shopper.id, "150.00", T0)

    assert entries(shopper.id) == [("earn_purchase", D(150))]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Purchase)) == 1
