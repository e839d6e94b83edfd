"""The `bulk_awards.run` job: queued awards credit their frozen members in ranges of member ids, one
transaction per range, with the set-based `ledger.credit_many`, marking the range awarded in the
same transaction (a run killed half-way and run again credits each member exactly once).

A run that raises is counted on its award: the award waits (1, 2, 4... minutes, at most an hour)
and is tried again, and after MAX_ATTEMPTS failed runs it is `failed` and left alone, so one broken
award neither runs for ever nor stops the awards queued after it (the job still fails, to be seen).
Each range takes the award's lock first and stops if the award was cancelled meanwhile: a cancel
waits for the range being credited, and no range starts after it (service.hold_award)."""
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from loyalty import clock
from loyalty.bulk_awards.models import BulkAward, BulkAwardMember
from loyalty.bulk_awards.service import BATCH, ENTRY_TYPE, REFERENCE_TYPE, RUNNABLE, hold_award
from loyalty.database import Points, rows_changed, transaction
from loyalty.extensions import db
from loyalty.points import ledger

MAX_ATTEMPTS = 5
FIRST_RETRY = timedelta(minutes=1)
LONGEST_RETRY = timedelta(hours=1)


def _due(now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(BulkAward.status.in_(RUNNABLE), BulkAward.cancelled_at.is_(None),
                   sa.or_(BulkAward.retry_at.is_(None), BulkAward.retry_at <= now))


def due_members() -> int:
    """Members of awards to run now not yet credited (the job's progress bar)."""
    return db.session.scalar(
        sa.select(sa.func.count()).select_from(BulkAwardMember).join(BulkAward)
        .where(_due(clock.now()), BulkAwardMember.awarded_at.is_(None))) or 0


def run_awards(as_of: date | None = None, progress: Callable[[int], Any] | None = None,
               now: datetime | None = None, batch: int = BATCH) -> dict[str, int]:
    """The `bulk_awards.run` job: every award due, oldest first, in ranges of member ids."""
    totals = {"awards": 0, "members": 0, "awarded": 0, "failed": 0}
    award_ids = list(db.session.scalars(sa.select(BulkAward.id).where(_due(now or clock.now())).order_by(BulkAward.id)))
    db.session.rollback()
    first_error: Exception | None = None
    for award_id in award_ids:
        try:
            counts = _run_award(award_id, progress, now, batch)
        except Exception as error:
            db.session.rollback()
            _count_failure(award_id, error, now or clock.now())
            totals["failed"] += 1
            first_error = first_error or error
            continue
        totals["awards"] += 1
        totals["members"] += counts["members"]
        totals["awarded"] += counts["awarded"]
    if first_error is not None:
        raise first_error
    return totals


def _count_failure(award_id: int, error: Exception, now: datetime) -> None:
    with transaction():
        award = db.session.scalar(sa.select(BulkAward).where(BulkAward.id == award_id).with_for_update())
        if award is None or award.cancelled_at is not None:
            return
        award.attempts += 1
        award.error = f"Run {award.attempts} of {MAX_ATTEMPTS} failed: {type(error).__name__}: {error}"[:2000]
        if award.attempts >= MAX_ATTEMPTS:
            award.status, award.retry_at, award.finished_at = "failed", None, now
        else:
            award.status = "queued"
            award.retry_at = now + min(FIRST_RETRY * 2 ** (award.attempts - 1), LONGEST_RETRY)


def _run_award(award_id: int, progress: Callable[[int], Any] | None, now: datetime | None,
               batch: int) -> dict[str, int]:
    counts = {"members": 0, "awarded": 0}
    with transaction():
        award = db.session.scalar(sa.select(BulkAward).where(BulkAward.id == award_id).with_for_update())
        if award is None or award.cancelled_at is not None or award.status not in RUNNABLE:
            return counts
        award.status = "running"
        award.started_at = award.started_at or (now or clock.now())
        points, expires_at, reason = award.points, award.expires_at, award.reason
    after = 0
    while True:
        moment = now or clock.now()
        with transaction():
            # The award's lock first: a cancel committed before this range stops it here; one coming
            # while it runs waits for its commit (what it credits stays credited and is counted), and
            # is served before the next range.
            hold_award(award_id)
            if db.session.scalar(sa.select(BulkAward.cancelled_at).where(BulkAward.id == award_id)
                                 .with_for_update()) is not None:
                return counts
            ids = list(db.session.scalars(
                sa.select(BulkAwardMember.member_id)
                .where(BulkAwardMember.award_id == award_id, BulkAwardMember.awarded_at.is_(None),
                       BulkAwardMember.member_id > after)
                .order_by(BulkAwardMember.member_id).limit(batch)))
            if not ids:
                break
            low, high = ids[0], ids[-1]
            due = ("SELECT b.member_id, :points AS points FROM bulk_award_members b "
                   "JOIN members m ON m.id = b.member_id "
                   "WHERE b.award_id = :award AND b.awarded_at IS NULL AND b.member_id BETWEEN :low AND :high "
                   "AND m.status = 'active'")
            credited = ledger.credit_many(
                due, {"points": Points().process_bind_param(points, None), "award": award_id, "low": low,
                      "high": high},
                ENTRY_TYPE, f"Bulk award: {reason}", (REFERENCE_TYPE, award_id), moment, expires_at=expires_at)
            marked = rows_changed(
                sa.update(BulkAwardMember).where(BulkAwardMember.award_id == award_id,
                                                 BulkAwardMember.awarded_at.is_(None),
                                                 BulkAwardMember.member_id.between(low, high))
                .values(awarded_at=moment))
            rows_changed(sa.update(BulkAward).where(BulkAward.id == award_id).values(
                awarded=BulkAward.awarded + credited,
                points_awarded=BulkAward.points_awarded + points * credited))
        counts["members"] += marked
        counts["awarded"] += credited
        after = high
        if progress:
            progress(marked)
    with transaction():
        rows_changed(sa.update(BulkAward).where(BulkAward.id == award_id, BulkAward.cancelled_at.is_(None))
                     .values(status="done", finished_at=now or clock.now(), retry_at=None))
    return counts
