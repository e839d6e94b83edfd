"""The nightly jobs: what each does with the clock moved, that a second run changes nothing, that
the set-based jobs leave every account exactly as settling it one by one would, that a second
runner is kept out and a failed run is recorded and finished by the next one."""
from datetime import date, timedelta
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from loyalty.extensions import db
from loyalty.jobs import registry, runner
from loyalty.jobs.models import JobLock, JobRun, Notification
from loyalty.members import jobs as member_jobs
from loyalty.members.models import Member
from loyalty.points import jobs as points_jobs
from loyalty.points import service as points
from loyalty.points.models import Account, Entry
from loyalty.segments import jobs as segment_jobs
from tests import factories
from tests.factories import D
from tests.service.ledger_helpers import (
    T0,
    assert_ledger_ok,
    balances,
    entries,
    lots,
    use_rules,
    utc,
)

pytestmark = pytest.mark.usefixtures("ctx")

DAY0 = date(2026, 3, 10)


def new_member(**fields):
    return SimpleNamespace(id=factories.member(now=fields.pop("now", T0), **fields).id)


def done():
    db.session.remove()


def account_state(member_id):
    return balances(member_id), lots(member_id), [(t, p) for t, p in entries(member_id)]


# --- points.release_pending and points.expire ------------------------------------------------------

def test_release_makes_pending_points_available_on_their_day():
    use_rules(pending_days=7)
    member = new_member()
    factories.purchase(member.id, "100.00", now=T0)

    assert points_jobs.release_pending(DAY0 + timedelta(days=6), now=utc(2026, 3, 16, 17))["lots_released"] == 0
    result = points_jobs.release_pending(DAY0 + timedelta(days=7), now=utc(2026, 3, 17, 17))
    done()

    assert result["lots_released"] == 1
    assert balances(member.id) == (D("100.00"), D("0.00"), D("100.00"), D("0.00"))
    assert_ledger_ok()


def test_released_points_pay_a_debt_first():
    use_rules(pending_days=7)
    member = new_member()
    factories.purchase(member.id, "50.00", now=T0, receipt_no="A")
    points.pay_with_points(member.id, "S1", "P1", D("50"), now=T0 + timedelta(days=8))  # spends A's 50
    purchase = factories.purchase(member.id, "30.00", now=T0 + timedelta(days=8), receipt_no="B").record
    first = db.session.scalar(sa.select(sa.func.min(Entry.id)))
    # Refund A: its 50 points were spent, so the member owes 50 ...
    a = points.get_purchase(purchase.id - 1)
    points.refund_purchase(a.id, "S1", "F1", D("50.00"), now=T0 + timedelta(days=9))
    assert balances(member.id)[3] == D("50.00") and first
    # ... and B's 30 pending points pay 30 of it when the job releases them.
    points_jobs.release_pending(date(2026, 3, 25), now=utc(2026, 3, 25, 17))  # B's 7 days are up
    done()

    assert balances(member.id) == (D("-20.00"), D("0.00"), D("30.00"), D("20.00"))
    assert_ledger_ok()


def test_expire_takes_what_is_left_of_lots_past_their_day_with_an_entry_each():
    use_rules(expiry_days=30)
    member = new_member()
    factories.purchase(member.id, "100.00", now=T0)
    factories.purchase(member.id, "20.00", now=T0 + timedelta(days=1))
    points.pay_with_points(member.id, "S1", "P1", D("30"), now=T0 + timedelta(days=2))

    result = points_jobs.expire_points(date(2026, 4, 9), now=utc(2026, 4, 10, 1))
    done()

    assert result["lots_expired"] == 1  # the first lot (to 9 April); the second lasts a day longer
    assert balances(member.id)[0] == D("20.00")
    assert entries(member.id)[-1] == ("expire", D("-70.00"))
    assert_ledger_ok()


def test_a_second_run_for_the_same_day_changes_nothing():
    use_rules(expiry_days=30, pending_days=3)
    members = [new_member() for _ in range(3)]
    for m in members:
        factories.purchase(m.id, "10.00", now=T0)
    points_jobs.expire_points(date(2026, 6, 1), now=utc(2026, 6, 1, 17))
    done()
    before = [account_state(m.id) for m in members]

    again = points_jobs.expire_points(date(2026, 6, 1), now=utc(2026, 6, 1, 18))
    done()

    assert again["lots_expired"] == 0 and again["lots_released"] == 0
    assert [account_state(m.id) for m in members] == before


def test_the_jobs_leave_an_account_exactly_as_settling_it_would():
    """Twins live the same life; one is settled by the nightly jobs, the other by its own next
    write. Same points, same lots, same entries."""
    use_rules(pending_days=2, expiry_days=3)
    twins = [new_member(), new_member()]
    for twin in twins:
        factories.purchase(twin.id, "80.00", now=T0)
        points.adjust_points(twin.id, D("-30"), "correction", "test", now=T0)  # pending: 30 owed
        factories.purchase(twin.id, "25.00", now=T0 + timedelta(days=1))
        points.record_activity(twin.id, "sign_in", "d1", now=T0)
    late = utc(2026, 3, 20, 17)

    points_jobs.expire_points(date(2026, 3, 20), now=late)   # the first twin, by the job
    done()
    points.record_activity(twins[1].id, "share", "x", now=late)  # the second, by a write ...
    points.record_activity(twins[0].id, "share", "x", now=late)  # ... and the same write for the first
    done()

    first, second = account_state(twins[0].id), account_state(twins[1].id)
    assert first[0] == second[0]
    assert first[1] == second[1]
    assert sorted(first[2], key=repr) == sorted(second[2], key=repr)
    assert_ledger_ok()


def test_batches_cover_every_member():
    use_rules(expiry_days=1)
    members = [new_member() for _ in range(5)]
    for m in members:
        factories.purchase(m.id, "1.00", now=T0)

    result = points_jobs.expire_points(date(2026, 3, 20), now=utc(2026, 3, 20, 17), batch=2)
    done()

    assert result["lots_expired"] == 5
    assert {balances(m.id)[0] for m in members} == {D("0.00")}
    assert_ledger_ok()


# --- points.expiry_reminders ---------------------------------------------------------------------

def test_reminders_one_per_member_and_expiry_day_and_not_twice():
    use_rules(expiry_days=30)
    member = new_member()
    factories.purchase(member.id, "10.00", now=T0)
    factories.purchase(member.id, "5.00", now=T0 + timedelta(hours=1))  # same expiry day
    factories.purchase(member.id, "7.00", now=T0 + timedelta(days=2))
    other = new_member()
    use_rules(expiry_days=365)
    factories.purchase(other.id, "10.00", now=T0)  # far away: no reminder

    first = points_jobs.expiry_reminders(date(2026, 3, 12), now=utc(2026, 3, 12, 1))
    second = points_jobs.expiry_reminders(date(2026, 3, 12), now=utc(2026, 3, 12, 2))
    done()

    assert (first["reminders"], second["reminders"]) == (2, 0)
    payloads = sorted(n.payload["last_day"] + " " + n.payload["points"]
                      for n in db.session.scalars(sa.select(Notification)))
    assert payloads == ["2026-04-09 15.00", "2026-04-11 7.00"]


# --- members.lifecycle and members.value_segments ------------------------------------------------

def stage(member_id):
    return db.session.scalar(sa.select(Member.lifecycle_stage).where(Member.id == member_id))


def segment(member_id):
    return db.session.scalar(sa.select(Member.value_segment).where(Member.id == member_id))


def test_lifecycle_stages():
    never = new_member(now=utc(2025, 1, 1))
    fresh = new_member(now=utc(2025, 1, 1))
    factories.purchase(fresh.id, "10.00", now=utc(2026, 2, 1), occurred_at=utc(2026, 2, 1))
    active = new_member(now=utc(2025, 1, 1))
    factories.purchase(active.id, "10.00", now=utc(2025, 6, 1), occurred_at=utc(2025, 6, 1))
    points.record_activity(active.id, "sign_in", "a", now=utc(2026, 3, 1))
    dormant = new_member(now=utc(2025, 1, 1))
    factories.purchase(dormant.id, "10.00", now=utc(2025, 6, 1), occurred_at=utc(2025, 6, 1))
    points.record_activity(dormant.id, "sign_in", "a", now=utc(2026, 1, 1))
    churned = new_member(now=utc(2025, 1, 1))
    factories.purchase(churned.id, "10.00", now=utc(2025, 6, 1), occurred_at=utc(2025, 6, 1))

    result = segment_jobs.lifecycle(DAY0, now=T0)
    again = segment_jobs.lifecycle(DAY0, now=T0)
    done()

    assert [stage(m.id) for m in (never, fresh, active, dormant, churned)] == \
        ["potential", "new", "active", "dormant", "churned"]
    assert (result["changed"], again["changed"]) == (5, 0)


def test_value_segments():
    members = [new_member(now=utc(2025, 1, 1)) for _ in range(12)]
    for n, m in enumerate(members[:10]):  # ten buyers; the top 10% is one member
        factories.purchase(m.id, f"{100 * (n + 1)}.00", now=utc(2026, 3, 1), occurred_at=utc(2026, 3, 1))
    for k in range(5):  # frequent but small
        factories.purchase(members[0].id, "20.00", now=utc(2026, 2, 1) + timedelta(days=k),
                           occurred_at=utc(2026, 2, 1) + timedelta(days=k))
    factories.purchase(members[10].id, "5000.00", now=utc(2025, 2, 1), occurred_at=utc(2025, 2, 1))

    result = segment_jobs.value_segments(DAY0, now=T0)
    again = segment_jobs.value_segments(DAY0, now=T0)
    done()

    assert segment(members[9].id) == "high_value"
    assert segment(members[0].id) == "potential"
    assert segment(members[5].id) == "low_value"
    assert segment(members[10].id) == "at_risk"
    assert segment(members[11].id) is None
    assert again["changed"] == 0 and result["changed"] == 11


# --- the runner: lock, record, failure, restart ----------------------------------------------------

def test_a_run_is_recorded_with_its_summary():
    record = runner.run(registry.get("points.expire"), DAY0)
    done()

    row = db.session.get(JobRun, record.id)
    assert (row.job_id, row.as_of, row.outcome) == ("points.expire", DAY0, "succeeded")
    assert row.finished_at >= row.started_at and row.summary["lots_expired"] == 0


def test_a_second_runner_is_kept_out_and_says_so():
    runner.acquire("points.expire", "other-host:1", T0.replace(year=2030))
    db.session.commit()

    record = runner.run(registry.get("points.expire"), DAY0)
    done()

    assert record.outcome == "skipped"
    assert db.session.get(JobLock, "points.expire").holder == "other-host:1"


def test_a_stale_lock_of_a_killed_runner_is_taken_over():
    runner.acquire("points.expire", "dead-host:1", T0)  # its heartbeat stopped long ago
    record = runner.run(registry.get("points.expire"), DAY0)
    done()

    assert record.outcome == "succeeded"
    assert db.session.get(JobLock, "points.expire").holder is None


def test_a_run_that_fails_half_way_is_recorded_and_the_next_one_finishes(monkeypatch):
    use_rules(expiry_days=1)
    members = [new_member() for _ in range(4)]
    for m in members:
        factories.purchase(m.id, "1.00", now=T0)
    real = points_jobs.expire_range
    calls = []

    def dies_on_the_second_range(*args):
        calls.append(args)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real(*args)

    monkeypatch.setattr(points_jobs, "expire_range", dies_on_the_second_range)
    monkeypatch.setattr(points_jobs, "BATCH", 2)
    job = registry.Job("points.expire", "", "* * * * *",
                       lambda as_of, progress=None: points_jobs.expire_points(as_of, progress, batch=2),
                       lambda: 4)
    with pytest.raises(RuntimeError):
        runner.run(job, date(2026, 3, 20))
    done()
    failed = db.session.scalars(sa.select(JobRun)).one()
    assert failed.outcome == "failed" and "killed" in failed.error
    assert sorted(balances(m.id)[0] for m in members) == [D("0.00"), D("0.00"), D("1.00"), D("1.00")]

    monkeypatch.setattr(points_jobs, "expire_range", real)
    record = runner.run(job, date(2026, 3, 20))
    done()

    assert record.outcome == "succeeded" and record.summary["lots_expired"] == 2
    assert {balances(m.id)[0] for m in members} == {D("0.00")}
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Entry).where(Entry.type == "expire")) == 4
    assert_ledger_ok()


def test_the_scheduler_registers_every_job_with_its_cron(app):
    from apscheduler.schedulers.background import BackgroundScheduler

    from loyalty.jobs.scheduler import build

    app.config["LOYALTY_JOB_SCHEDULES"] = {"points.expire": "0 1 * * *"}
    try:
        scheduler = build(app, BackgroundScheduler)
        jobs = {job.id: job for job in scheduler.get_jobs()}
    finally:
        app.config["LOYALTY_JOB_SCHEDULES"] = {}

    assert set(jobs) == {job.id for job in registry.JOBS}
    assert str(jobs["points.expire"].trigger.fields[5]) == "1"  # hour, from the setting
    assert str(jobs["tiers.recompute"].trigger.fields[5]) == "2"
    assert str(jobs["tiers.recompute"].trigger.timezone) == app.config["LOYALTY_TIMEZONE"]
    assert all(job.max_instances == 1 and job.coalesce for job in jobs.values())


def test_every_account_is_untouched_when_nothing_is_due():
    member = new_member()
    factories.purchase(member.id, "10.00", now=T0)
    before = db.session.get(Account, member.id).updated_at
    for job_id in ("points.release_pending", "points.expire"):
        runner.run(registry.get(job_id), DAY0)
    done()
    assert db.session.get(Account, member.id).updated_at == before


# --- members.birthday_bonus ----------------------------------------------------------------------

def test_a_birthday_gives_the_tiers_points_once_a_year():
    from loyalty.tiers import service as tiers

    today = new_member(birthday=date(1990, 3, 10))
    tiers.set_member_tier(today.id, "gold", "test", "test", now=T0)  # gold: 50 birthday points
    ordinary = new_member(birthday=date(1991, 3, 10))  # ordinary: 0 birthday points
    tomorrow = new_member(birthday=date(1990, 3, 11))

    first = member_jobs.birthday_bonus(DAY0, now=T0)
    second = member_jobs.birthday_bonus(DAY0, now=T0 + timedelta(hours=1))
    done()

    assert (first["gifts"], second["gifts"]) == (1, 0)
    assert entries(today.id) == [("bonus", D("50.00"))]
    assert balances(today.id) == (D("50.00"), D("0.00"), D("50.00"), D("0.00"))
    assert entries(ordinary.id) == [] and entries(tomorrow.id) == []
    assert_ledger_ok()
    next_year = member_jobs.birthday_bonus(date(2027, 3, 10), now=utc(2027, 3, 10, 1))
    assert next_year["gifts"] == 1


def test_a_birthday_gift_pays_a_debt_first_and_leap_day_birthdays_count_on_28_february():
    from loyalty.tiers import service as tiers

    leap = new_member(birthday=date(2000, 2, 29))
    tiers.set_member_tier(leap.id, "silver", "test", "test", now=T0)  # 20 birthday points
    points.adjust_points(leap.id, D("-5"), "correction", "test", now=T0)  # owes 5

    member_jobs.birthday_bonus(date(2027, 2, 28), now=utc(2027, 2, 28, 1))
    done()

    assert balances(leap.id) == (D("15.00"), D("0.00"), D("20.00"), D("0.00"))
    assert_ledger_ok()


def run_birthdays(day):
    """The scheduled job for `day`, run as the scheduler runs it (recorded), at 08:00 local."""
    from loyalty import clock

    with clock.frozen_at(utc(day.year, day.month, day.day, 0)):
        record = runner.run(registry.get("members.birthday_bonus"), day)
    done()
    return record.summary


def gold_member(birthday):
    from loyalty.tiers import service as tiers

    member = new_member(birthday=birthday)
    tiers.set_member_tier(member.id, "gold", "test", "test", now=T0)  # 50 birthday points
    return member


def test_birthdays_of_days_the_scheduler_missed_are_given_by_its_next_run():
    before, missed_1, missed_2, today, later = (
        gold_member(date(1990, 3, day)) for day in (9, 10, 11, 12, 13))

    run_birthdays(date(2026, 3, 9))
    summary = run_birthdays(date(2026, 3, 12))  # down on the 10th and the 11th
    again = run_birthdays(date(2026, 3, 12))

    assert summary["days"] == ["2026-03-10", "2026-03-11", "2026-03-12"] and summary["gifts"] == 3
    assert (again["days"], again["gifts"]) == (["2026-03-12"], 0)
    assert [entries(m.id) for m in (before, missed_1, missed_2, today, later)] == \
        [[("bonus", D("50.00"))]] * 4 + [[]]
    assert_ledger_ok()


def test_a_first_run_gives_only_its_own_day_and_a_catch_up_goes_back_a_week_at_most():
    long_ago, week_ago, today = (gold_member(date(1990, 3, day)) for day in (1, 13, 20))
    summary = run_birthdays(date(2026, 3, 20))  # the first run ever: nothing is owed before it
    assert summary["days"] == ["2026-03-20"]

    run_birthdays(date(2026, 2, 1))  # an old success (as_of earlier): the last one before 1 April
    summary = run_birthdays(date(2026, 4, 1))
    assert summary["days"][0] == "2026-03-25" and len(summary["days"]) == 8  # LOYALTY_BIRTHDAY_CATCH_UP_DAYS
    assert entries(long_ago.id) == [] and entries(week_ago.id) == []
    assert entries(today.id) == [("bonus", D("50.00"))]


def test_a_caught_up_new_years_eve_birthday_counts_in_the_old_year():
    eve = gold_member(date(1990, 12, 31))

    run_birthdays(date(2026, 12, 30))
    summary = run_birthdays(date(2027, 1, 1))
    run_birthdays(date(2027, 12, 31))  # the next year's gift is a new one

    assert summary["days"] == ["2026-12-31", "2027-01-01"]
    assert db.session.scalars(sa.select(Entry.reference_id).where(
        Entry.member_id == eve.id).order_by(Entry.id)).all() == ["2026", "2027"]


@pytest.mark.postgres_only
def test_two_runners_at_once_one_runs_and_one_is_refused(app):
    """Two scheduler processes (threads with their own connections here) start the same job at
    the same instant: one runs it, the other records that it skipped, and nothing is done twice."""
    import threading

    started, release = threading.Event(), threading.Event()

    def slow(as_of, progress=None):
        started.set()
        release.wait(30)
        return {"done": 1}

    job = registry.Job("test.slow", "", "* * * * *", slow, lambda: 1)
    outcomes, barrier = [], threading.Barrier(2)

    def run():
        with app.app_context():
            barrier.wait(10)
            try:
                outcomes.append(runner.run(job, DAY0).outcome)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    started.wait(30)
    for _ in range(100):  # the second runner gives up at once; the first is still running
        if outcomes:
            break
        threading.Event().wait(0.05)
    release.set()
    for thread in threads:
        thread.join(30)

    assert sorted(outcomes) == ["skipped", "succeeded"]
