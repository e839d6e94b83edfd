"""Bulk awards: queued for a segment as it is then, credited by the `bulk_awards.run` job, each
member exactly once even when the job is killed and run again."""
import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from loyalty import clock
from loyalty.bulk_awards import jobs as award_jobs
from loyalty.bulk_awards import service as award_service
from loyalty.bulk_awards.models import BulkAward
from loyalty.extensions import db
from loyalty.jobs import registry, runner
from loyalty.points import ledger
from loyalty.points.models import Entry
from loyalty.points.verify import broken_accounts
from loyalty.segments import service as segments
from tests import factories


def members_tagged(app, count, tag="vip"):
    with app.app_context():
        ids = [factories.member().id for _ in range(count)]
        for member_id in ids:
            segments.add_tags(member_id, [tag], "test")
        db.session.remove()
    return ids


def queue(api, award_no="A1", segment="tag:vip", points=50, **extra):
    return api.post("marketing", "/bulk-awards", json={"award_no": award_no, "segment": segment, "points": points,
                                                       "reason": "Store anniversary", **extra})


def bonus_entries(app, award_id):
    with app.app_context():
        rows = db.session.execute(sa.select(Entry.member_id, Entry.points).where(
            Entry.reference_type == "bulk_award", Entry.reference_id == str(award_id))).all()
        db.session.remove()
    return sorted(rows)


def test_an_award_is_queued_then_credited_by_the_job(api, app, runner):
    ids = members_tagged(app, 3)
    queued = queue(api)
    assert queued.status_code == 202, queued.json
    assert (queued.json["status"], queued.json["members"], queued.json["awarded"]) == ("queued", 3, 0)
    result = runner.invoke(args=["jobs", "run", "bulk_awards.run"])
    assert result.exit_code == 0, result.output
    award = api.get("marketing", f"/bulk-awards/{queued.json['id']}").json
    assert (award["status"], award["members"], award["awarded"], award["points_awarded"]) == ("done", 3, 3, 150)
    assert bonus_entries(app, award["id"]) == [(member_id, Decimal("50.00")) for member_id in ids]
    for member_id in ids:
        assert api.get("app", f"/members/{member_id}/points").json["available"] == 50
    again = runner.invoke(args=["jobs", "run", "bulk_awards.run"])
    assert again.exit_code == 0, again.output
    assert len(bonus_entries(app, award["id"])) == 3
    log = api.get("admin", "/audit-log", query_string={"action": "bulk_award.create"}).json["items"]
    assert len(log) == 1 and log[0]["after"]["members"] == 3
    with app.app_context():
        assert broken_accounts() == []
        db.session.remove()


def test_the_segment_is_frozen_when_the_award_is_queued(api, app):
    ids = members_tagged(app, 2)
    award_id = queue(api).json["id"]
    late = members_tagged(app, 1)
    with app.app_context():
        segments.remove_tags(ids[0], ["vip"], "test")  # left the segment after: still awarded
        award_jobs.run_awards()
        db.session.remove()
    assert [member_id for member_id, _ in bonus_entries(app, award_id)] == ids
    assert late[0] not in ids


def test_award_no_makes_the_award_idempotent(api, app):
    members_tagged(app, 1)
    first = queue(api)
    same = queue(api)
    other = queue(api, points=60)
    assert (same.status_code, same.json["id"]) == (202, first.json["id"])
    assert other.status_code == 409 and "A1" in other.json["message"]
    assert queue(api, award_no="A2").json["id"] != first.json["id"]


def test_bad_awards_are_refused_with_a_sentence(api):
    unknown = queue(api, segment="no-such-segment")
    assert unknown.status_code == 422 and "segment" in unknown.json["errors"]
    past = queue(api, award_no="A3", expires_at=(clock.now() - timedelta(days=1)).isoformat())
    assert past.status_code == 422 and "expires_at" in past.json["errors"]
    for points in (0, -5, 1.234, "ten"):
        assert queue(api, award_no="A4", points=points).status_code == 422
    assert api.post("pos", "/bulk-awards", json={}).status_code == 403
    assert api.get("app", "/bulk-awards/1").status_code == 403
    assert api.get("marketing", "/bulk-awards/999").status_code == 404


def test_a_job_killed_half_way_and_run_again_credits_each_member_once(api, app, monkeypatch):
    ids = members_tagged(app, 7)
    award_id = queue(api, expires_at=(clock.now() + timedelta(days=90)).isoformat()).json["id"]
    real, batches = ledger.credit_many, []

    def killed_in_the_third_batch(*args, **kwargs):
        batches.append(1)
        credited = real(*args, **kwargs)
        if len(batches) == 3:
            raise KeyboardInterrupt  # killed after crediting, before the batch commits
        return credited

    with app.app_context():
        monkeypatch.setattr(ledger, "credit_many", killed_in_the_third_batch)
        with pytest.raises(KeyboardInterrupt):
            award_jobs.run_awards(batch=2)
        db.session.remove()
    assert len(bonus_entries(app, award_id)) == 4
    assert api.get("marketing", f"/bulk-awards/{award_id}").json["status"] == "running"
    monkeypatch.setattr(ledger, "credit_many", real)
    with app.app_context():
        award_jobs.run_awards(batch=2)
        assert broken_accounts() == []
        db.session.remove()
    assert [member_id for member_id, _ in bonus_entries(app, award_id)] == ids
    award = api.get("marketing", f"/bulk-awards/{award_id}").json
    assert (award["status"], award["awarded"], award["points_awarded"]) == ("done", 7, 350)


def test_the_scheduler_runs_bulk_awards_every_minute():
    job = registry.get("bulk_awards.run")
    assert job is not None and job.cron == "* * * * *"


def test_no_webhook_events_unless_someone_listens(api, app):
    members_tagged(app, 2)
    queue(api)
    with app.app_context():
        award_jobs.run_awards()
        assert db.session.scalar(sa.text("SELECT COUNT(*) FROM webhook_events")) == 0
        db.session.remove()


@pytest.mark.postgres_only
def test_two_runners_at_once_credit_each_member_once(api, app):
    ids = members_tagged(app, 30)
    award_id = queue(api).json["id"]
    job = registry.get("bulk_awards.run")
    errors = []

    def run():
        with app.app_context():
            try:
                runner.run(job, clock.now().date())
            except Exception as error:  # pragma: no cover - reported below
                errors.append(error)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with app.app_context():
        award_jobs.run_awards()  # whatever a skipped runner left, a later run finishes
        assert broken_accounts() == []
        db.session.remove()
    assert errors == []
    assert [member_id for member_id, _ in bonus_entries(app, award_id)] == ids


# --- a failing award: bounded retries; cancel -----------------------------------------------------

def always_failing(*args, **kwargs):
    raise RuntimeError("the ledger refused")


def award_row(app, award_id):
    with app.app_context():
        award = db.session.get(BulkAward, award_id)
        row = {key: getattr(award, key) for key in ("status", "attempts", "retry_at", "error", "awarded",
                                                    "cancelled_at")}
        db.session.remove()
    return row


def test_a_failing_award_is_retried_with_back_off_then_left_failed_and_the_next_award_still_runs(
        api, app, monkeypatch):
    members_tagged(app, 3)
    broken = queue(api, "A-broken").json["id"]
    later = queue(api, "A-later").json["id"]
    real = ledger.credit_many

    def fails_for_the_first_award(due, params, *args, **kwargs):
        if params["award"] == broken:
            raise RuntimeError("the ledger refused")
        return real(due, params, *args, **kwargs)

    monkeypatch.setattr(ledger, "credit_many", fails_for_the_first_award)
    now = clock.now()
    with app.app_context():
        with pytest.raises(RuntimeError):
            award_jobs.run_awards(now=now)
        db.session.remove()
    assert api.get("marketing", f"/bulk-awards/{later}").json["status"] == "done"  # not held up by the broken one
    first = award_row(app, broken)
    assert (first["status"], first["attempts"]) == ("queued", 1)
    assert "Run 1 of 5 failed: RuntimeError: the ledger refused" in first["error"]
    assert first["retry_at"] == now + timedelta(minutes=1)
    with app.app_context():
        assert award_jobs.run_awards(now=now + timedelta(seconds=30))["failed"] == 0  # waiting: not tried
        db.session.remove()
    waits = []
    for _ in range(4):
        now = award_row(app, broken)["retry_at"]
        with app.app_context():
            with pytest.raises(RuntimeError):
                award_jobs.run_awards(now=now)
            db.session.remove()
        row = award_row(app, broken)
        if row["retry_at"]:
            waits.append(row["retry_at"] - now)
    assert waits == [timedelta(minutes=2), timedelta(minutes=4), timedelta(minutes=8)]
    gave_up = award_row(app, broken)
    assert (gave_up["status"], gave_up["attempts"], gave_up["retry_at"]) == ("failed", 5, None)
    with app.app_context():  # no later run takes it up again
        assert award_jobs.run_awards(now=now + timedelta(days=1)) == {"awards": 0, "members": 0, "awarded": 0,
                                                                        "failed": 0}
        assert award_jobs.due_members() == 0
        db.session.remove()
    shown = api.get("marketing", f"/bulk-awards/{broken}").json
    assert (shown["status"], shown["attempts"], shown["awarded"]) == ("failed", 5, 0)


def test_a_failed_award_retried_by_an_operator_credits_each_member_once(api, app, runner, monkeypatch):
    ids = members_tagged(app, 5)
    award_id = queue(api).json["id"]
    real, calls = ledger.credit_many, []

    def fails_on_the_second_range(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(ledger, "credit_many", fails_on_the_second_range)
    with app.app_context():
        with pytest.raises(RuntimeError):
            award_jobs.run_awards(batch=2)
        db.session.remove()
    monkeypatch.setattr(ledger, "credit_many", always_failing)
    with app.app_context():
        for _ in range(4):
            db.session.execute(sa.update(BulkAward).values(retry_at=None))  # the waits, passed
            db.session.commit()
            with pytest.raises(RuntimeError):
                award_jobs.run_awards(batch=2)
        db.session.remove()
    assert award_row(app, award_id)["status"] == "failed"
    monkeypatch.setattr(ledger, "credit_many", real)
    result = runner.invoke(args=["bulk-awards", "retry", str(award_id)])
    assert result.exit_code == 0, result.output
    assert "queued again: 3 members left" in result.output
    assert runner.invoke(args=["jobs", "run", "bulk_awards.run"]).exit_code == 0
    assert [member_id for member_id, _ in bonus_entries(app, award_id)] == ids
    award = api.get("marketing", f"/bulk-awards/{award_id}").json
    assert (award["status"], award["awarded"], award["attempts"]) == ("done", 5, 0)
    log = api.get("admin", "/audit-log", query_string={"action": "bulk_award.retry"}).json["items"]
    assert len(log) == 1 and log[0]["before"]["status"] == "failed"


def test_a_cancelled_award_credits_nobody_more_and_keeps_what_was_credited(api, app, runner, monkeypatch):
    ids = members_tagged(app, 7)
    award_id = queue(api).json["id"]
    real, batches = ledger.credit_many, []

    def killed_in_the_second_batch(*args, **kwargs):
        batches.append(1)
        credited = real(*args, **kwargs)
        if len(batches) == 2:
            raise KeyboardInterrupt
        return credited

    with app.app_context():
        monkeypatch.setattr(ledger, "credit_many", killed_in_the_second_batch)
        with pytest.raises(KeyboardInterrupt):
            award_jobs.run_awards(batch=2)
        db.session.remove()
    monkeypatch.setattr(ledger, "credit_many", real)
    result = runner.invoke(args=["bulk-awards", "cancel", str(award_id), "--reason", "Wrong segment"])
    assert result.exit_code == 0, result.output
    assert "2 of 7 members had been credited and keep their points" in result.output
    assert runner.invoke(args=["jobs", "run", "bulk_awards.run"]).exit_code == 0
    assert [member_id for member_id, _ in bonus_entries(app, award_id)] == ids[:2]
    award = api.get("marketing", f"/bulk-awards/{award_id}").json
    assert (award["status"], award["awarded"], award["points_awarded"]) == ("failed", 2, 100)
    assert award["cancelled_at"] and award["error"].startswith("Cancelled by loyalty bulk-awards cancel (cli): Wrong segment")
    again = runner.invoke(args=["bulk-awards", "cancel", str(award_id), "--reason", "Wrong segment"])
    assert again.exit_code == 0  # cancelling twice answers the same
    refused = runner.invoke(args=["bulk-awards", "retry", str(award_id)])
    assert refused.exit_code != 0 and "is cancelled" in refused.output
    log = api.get("admin", "/audit-log", query_string={"action": "bulk_award.cancel"}).json["items"]
    assert len(log) == 1 and log[0]["after"]["awarded"] == 2 and log[0]["before"]["status"] == "running"
    with app.app_context():
        assert broken_accounts() == []
        db.session.remove()


def test_a_done_award_cannot_be_cancelled_and_a_reason_is_required(api, app, runner):
    members_tagged(app, 1)
    award_id = queue(api).json["id"]
    assert runner.invoke(args=["bulk-awards", "cancel", str(award_id), "--reason", "  "]).exit_code != 0
    assert runner.invoke(args=["jobs", "run", "bulk_awards.run"]).exit_code == 0
    refused = runner.invoke(args=["bulk-awards", "cancel", str(award_id), "--reason", "too late"])
    assert refused.exit_code != 0
    assert "is done: all 1 members were credited" in refused.output
    assert "No bulk award with id 999" in runner.invoke(
        args=["bulk-awards", "cancel", "999", "--reason", "x"]).output


@pytest.mark.postgres_only
def test_a_cancel_during_a_range_waits_for_it_and_no_range_starts_after(api, app, monkeypatch):
    members_tagged(app, 9)
    award_id = queue(api).json["id"]
    real, crediting, ranges = ledger.credit_many, threading.Event(), []

    def cancel_waiting_for_the_award():
        with db.engine.connect() as watcher:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                watcher.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
                if watcher.scalar(sa.text("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
                                          "AND wait_event_type = 'Lock'")):
                    return
                time.sleep(0.02)
        raise AssertionError("the cancel never waited for the range")

    def slow(*args, **kwargs):
        ranges.append(1)
        credited = real(*args, **kwargs)
        crediting.set()
        cancel_waiting_for_the_award()  # the cancel arrives while this range holds the award
        return credited

    monkeypatch.setattr(ledger, "credit_many", slow)
    errors = []

    def run():
        with app.app_context():
            try:
                award_jobs.run_awards(batch=3)
            except Exception as error:  # pragma: no cover - reported below
                errors.append(error)
            finally:
                db.session.remove()

    job = threading.Thread(target=run)
    job.start()
    assert crediting.wait(10)
    with app.app_context():
        cancelled = award_service.cancel_award(award_id, "Stop", actor="admin test")
        awarded_when_cancelled = cancelled.awarded
        db.session.remove()
    job.join()
    assert errors == [] and len(ranges) == 1
    assert awarded_when_cancelled == 3  # the range in flight finished and was counted before the cancel
    assert len(bonus_entries(app, award_id)) == 3
    assert award_row(app, award_id)["awarded"] == 3
