"""The `bulk_awards.run` job: queued awards credit their frozen members in ranges of member ids, one
transaction per range, with the set-based `ledger.credit_many`, marking the range awarded in the
same transaction (a run killed half-way and run again credits each member exactly once)."""
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa

from loyalty import clock
from loyalty.bulk_awards.models import BulkAward, BulkAwardMember
from loyalty.bulk_awards.service import BATCH, ENTRY_TYPE, REFERENCE_TYPE
from loyalty.database import Points, rows_changed, transaction
from loyalty.extensions import db
from loyalty.points import ledger


def due_members() -> int:
    """Members of queued or unfinished awards not yet credited (the job's progress bar)."""
    return db.session.scalar(
        sa.select(sa.func.count()).select_from(BulkAwardMember).join(BulkAward)
        .where(BulkAward.status.in_(("queued", "running", "failed")), BulkAwardMember.awarded_at.is_(None))) or 0


def run_awards(as_of: date | None = None, progress: Callable[[int], Any] | None = None,
               now: datetime | None = None, batch: int = BATCH) -> dict[str, int]:
    """The `bulk_awards.run` job: every award not done, oldest first, in ranges of member ids."""
    totals = {"awards": 0, "members": 0, "awarded": 0}
    award_ids = list(db.session.scalars(sa.select(BulkAward.id).where(
        BulkAward.status.in_(("queued", "running", "failed"))).order_by(BulkAward.id)))
    db.session.rollback()
    for award_id in award_ids:
        try:
            counts = _run_award(award_id, progress, now, batch)
        except Exception as error:
            db.session.rollback()
            with transaction():
                award = db.session.get_one(BulkAward, award_id)
                award.status, award.error = "failed", f"{type(error).__name__}: {error}"[:2000]
            raise
        totals["awards"] += 1
        totals["members"] += counts["members"]
        totals["awarded"] += counts["awarded"]
    return totals


def _run_award(award_id: int, progress: Callable[[int], Any] | None, now: datetime | None,
               batch: int) -> dict[str, int]:
    with transaction():
        award = db.session.get_one(BulkAward, award_id)
        award.status, award.error = "running", None
        award.started_at = award.started_at or (now or clock.now())
        points, expires_at, reason = award.points, award.expires_at, award.reason
    counts = {"members": 0, "awarded": 0}
    after = 0
    while True:
        moment = now or clock.now()
        with transaction():
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
        award = db.session.get_one(BulkAward, award_id)
        award.status, award.finished_at = "done", now or clock.now()
    return counts
