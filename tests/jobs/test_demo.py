"""`loyalty demo`: a believable world, made through the services, once."""
import random
import re
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from loyalty import clock, demo
from loyalty.extensions import db
from loyalty.members import service as members
from loyalty.members.models import Member
from loyalty.points.models import Activity, PointsPayment, Purchase, Refund
from loyalty.promotions.models import Promotion, PromotionGrant
from loyalty.promotions.service import status_of
from loyalty.referrals.models import Referral
from loyalty.rewards.models import Redemption, Voucher
from loyalty.segments import jobs as segment_jobs
from loyalty.segments.models import MemberTag
from loyalty.tiers.models import TierChange
from loyalty.webhooks import service as webhooks
from tests.conftest import fresh_programme

DAY = datetime(2026, 6, 15, 4, 0, tzinfo=timezone.utc)


def row_counts(app):
    with app.app_context():
        # The report figures' change rows follow the path the writes took, their sums the world:
        # folded, the same world has the same rows.
        segment_jobs.fold_figures()
        counts = {table.name: db.session.scalar(sa.select(sa.func.count()).select_from(table))
                  for table in db.metadata.sorted_tables}
        db.session.remove()
    return counts


def make(runner, *args):
    with clock.frozen_at(DAY):
        return runner.invoke(args=["demo", *args])


def test_demo_world_has_members_in_several_tiers_stages_and_segments(app, runner, assert_ledger_ok):
    result = make(runner, "--members", "40")
    assert result.exit_code == 0, result.output
    with app.app_context():
        people = db.session.execute(
            sa.select(Member.tier_code, Member.lifecycle_stage, Member.value_segment)).all()
        assert len(people) == 40
        assert len({tier for tier, _, _ in people}) >= 3
        assert "ordinary" in {tier for tier, _, _ in people}
        assert len({stage for _, stage, _ in people}) >= 3
        assert None not in {stage for _, stage, _ in people}  # the lifecycle job ran
        assert len({segment for _, _, segment in people} - {None}) >= 3
        count = lambda model, *where: db.session.scalar(  # noqa: E731
            sa.select(sa.func.count()).select_from(model).where(*where))
        assert count(Purchase) > 100
        assert count(Purchase, Purchase.items.is_not(None)) > 0
        assert count(Refund) > 0
        assert count(Activity) > 40
        assert count(Referral, Referral.status == "qualified") > 0
        assert count(Redemption) > 0
        assert count(Voucher, Voucher.status == "used") > 0
        assert count(PointsPayment) > 0
        running, ended = (db.session.scalar(sa.select(Promotion).where(Promotion.name == name))
                          for name, _ in demo.promotion_plan(DAY))
        assert (status_of(running, DAY), status_of(ended, DAY)) == ("active", "ended")
        assert count(PromotionGrant, PromotionGrant.promotion_id == running.id) > 0
        assert count(MemberTag) > 0
        # Upgrades as purchases qualified during the year; tonight's recompute takes down a member
        # whose silver year is over.
        assert count(TierChange, TierChange.reason == "upgrade") >= 3
        assert count(TierChange, TierChange.reason == "downgrade") >= 1
        joined = db.session.scalars(sa.select(Member.joined_at)).all()
        assert (DAY - min(joined)).days > 365  # a year of history, not a day of it
        receipts = db.session.scalars(sa.select(Purchase.receipt_no)).all()
        assert all(receipt.startswith("DEMO-") for receipt in receipts)
        db.session.remove()
    assert "Members: 40; by tier: ordinary" in result.output
    assert "Points outstanding:" in result.output
    assert_ledger_ok()


def test_second_demo_run_changes_nothing_and_says_so(app, runner, assert_ledger_ok):
    assert make(runner, "--members", "40").exit_code == 0
    before = row_counts(app)
    again = make(runner, "--members", "40")
    assert again.exit_code == 0, again.output
    assert "already in this database; nothing was changed" in again.output
    assert row_counts(app) == before
    assert_ledger_ok()


def test_demo_of_another_size_on_a_demo_world_is_refused(app, runner):
    assert make(runner, "--members", "20").exit_code == 0
    before = row_counts(app)
    other = make(runner, "--members", "30")
    assert other.exit_code != 0
    assert "--seed 1 --members 20" in other.output
    assert row_counts(app) == before


def test_demo_refuses_a_database_with_other_members_unless_forced(app, runner, assert_ledger_ok):
    with app.app_context():
        real = members.register_member("顾客 Real", phone="+8613900000000").id
        db.session.remove()
    refused = make(runner, "--members", "20")
    assert refused.exit_code != 0
    assert "1 members who are not part of the demo world" in refused.output
    assert "--force" in refused.output
    assert row_counts(app)["members"] == 1
    forced = make(runner, "--members", "20", "--force")
    assert forced.exit_code == 0, forced.output
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Member)) == 21
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Purchase)
                                 .where(Purchase.member_id == real)) == 0
        db.session.remove()
    assert_ledger_ok()


def test_demo_refuses_a_database_whose_webhooks_would_hear_of_it_even_forced(app, runner):
    with app.app_context():
        webhooks.create_subscription({"url": "https://crm.example/hooks", "events": ["member.created"],
                                      "secret": "s" * 32}, actor="admin test")
        db.session.remove()
    refused = make(runner, "--members", "20", "--force")
    assert refused.exit_code != 0
    assert "1 active webhook subscriptions" in refused.output
    assert row_counts(app)["members"] == 0


def test_demo_killed_half_way_finishes_the_same_world_without_doubling(app, runner, monkeypatch,
                                                                       assert_ledger_ok):
    assert make(runner, "--members", "25").exit_code == 0
    whole = row_counts(app)
    with app.app_context():
        world = _world()
        db.session.remove()  # its read transaction would hold up PostgreSQL's TRUNCATE
        fresh_programme()

    played, run = [], demo.Player.run

    def crash_after_120_events(self, event):
        if len(played) == 120:
            raise KeyboardInterrupt("killed")
        played.append(event)
        run(self, event)

    monkeypatch.setattr(demo, "BATCH", 50)
    monkeypatch.setattr(demo.Player, "run", crash_after_120_events)
    killed = make(runner, "--members", "25")
    assert killed.exit_code != 0
    assert 0 < row_counts(app)["purchases"] < whole["purchases"]
    monkeypatch.setattr(demo.Player, "run", run)
    finished = make(runner, "--members", "25")
    assert finished.exit_code == 0, finished.output
    written = int(re.search(r"an earlier run had written (\d+)", finished.output).group(1))
    assert 100 <= written <= 120  # the batches before the crash, not the one it stopped
    assert row_counts(app) == whole
    with app.app_context():
        assert _world() == world
        db.session.remove()
    assert_ledger_ok()


def _world():
    """What a world is, without the codes the services draw at random (card tokens, vouchers)."""
    return (sorted(db.session.execute(sa.select(Member.phone, Member.name, Member.tier_code,
                                                Member.lifecycle_stage, Member.value_segment)).all()),
            sorted(db.session.execute(sa.select(Purchase.receipt_no, Purchase.amount, Purchase.points_earned,
                                                Purchase.occurred_at)).all()))


def test_the_same_seed_plans_the_same_world_and_another_seed_another():
    first = demo.plan(random.Random(1), 60, DAY)
    again = demo.plan(random.Random(1), 60, DAY)
    other = demo.plan(random.Random(2), 60, DAY)
    assert first == again
    assert [(e.at, e.kind, e.person, e.data) for e in first.events] == \
        [(e.at, e.kind, e.person, e.data) for e in again.events]
    assert first.people != other.people


def test_planned_people_have_unique_mainland_mobile_numbers_and_some_emails_and_birthdays():
    world = demo.plan(random.Random(1), 500, DAY)
    phones = [person.phone for person in world.people]
    assert len(set(phones)) == 500
    assert all(re.fullmatch(r"\+861(3[5-9]|5[0-289]|8[678])\d{8}", phone) for phone in phones)
    emails = [person.email for person in world.people if person.email]
    assert 100 < len(emails) < 400 and len(set(emails)) == len(emails)
    assert all(email.rsplit("@", 1)[1] in demo.EMAIL_DOMAINS for email in emails)
    assert any(re.search(r"[\u4e00-\u9fff]", person.name) for person in world.people)
    assert any(re.fullmatch(r"[A-Z][a-z]+ [A-Z]\w+", person.name) for person in world.people)
    assert {person.channel for person in world.people} == {"app", "mini-program", "store"}
    assert sum(person.birthday is not None for person in world.people) > 300
    assert all(event.at < DAY for event in world.events)
    assert all(batch[-1].traceable for batch in world.batches())


def test_planned_phone_numbers_are_valid_for_phonenumbers():
    phonenumbers = pytest.importorskip("phonenumbers")
    for person in demo.plan(random.Random(1), 200, DAY).people:
        number = phonenumbers.parse(person.phone)
        assert phonenumbers.is_valid_number(number)
        assert phonenumbers.number_type(number) == phonenumbers.PhoneNumberType.MOBILE
