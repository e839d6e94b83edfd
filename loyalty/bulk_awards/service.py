"""Bulk awards: marketing queues points for every member of a segment; the `bulk_awards.run` job
credits them.

Queuing freezes the segment: its member ids are copied into `bulk_award_members` by one
INSERT ... SELECT in the queuing transaction, so members who join or leave the segment afterwards
change nothing. The job credits them in ranges of member ids, one transaction per range, with the
set-based `ledger.credit_many` (one statement per table, no query per member) and marks the range's
members awarded in the same transaction: a job killed half-way and run again credits each member
exactly once. Idempotent on `award_no`: the same number again answers the award queued first."""
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from loyalty import audit, clock
from loyalty.bulk_awards.models import BulkAward, BulkAwardMember
from loyalty.database import Points, rows_changed, transaction
from loyalty.errors import Conflict, NotFound, ValidationFailed
from loyalty.extensions import db
from loyalty.members.models import Member
from loyalty.points import ledger
from loyalty.segments.service import segment_condition

BATCH = 20_000
ENTRY_TYPE = "bonus"
REFERENCE_TYPE = "bulk_award"


@dataclass(frozen=True)
class Order:
    award_no: str
    segment: str
    points: Decimal
    reason: str
    expires_at: datetime | None = None


def queue_award(order: Order, actor: str, now: datetime | None = None) -> BulkAward:
    """Queue an award (202): the segment's members now, frozen. The same `award_no` with the same
    order answers the award already queued; with another order, a 409."""
    now = now or clock.now()
    if order.expires_at is not None and order.expires_at <= now:
        raise ValidationFailed("The points would expire before they are given; choose a later expires_at.",
                               errors={"expires_at": ["Must be in the future."]})
    try:
        condition = segment_condition(order.segment)
    except NotFound as error:
        raise ValidationFailed(error.message, errors={"segment": ["Unknown segment."]}) from None
    with transaction():
        existing = db.session.scalar(sa.select(BulkAward).where(BulkAward.award_no == order.award_no))
        if existing is not None:
            return _same_order_or_409(existing, order)
        award = BulkAward(award_no=order.award_no, segment=order.segment, points=order.points,
                          reason=order.reason, expires_at=order.expires_at, status="queued", members=0,
                          awarded=0, points_awarded=Decimal("0.00"), actor=actor, created_at=now)
        db.session.add(award)
        db.session.flush()
        db.session.execute(sa.insert(BulkAwardMember).from_select(
            ["award_id", "member_id"],
            sa.select(sa.literal(award.id, sa.BigInteger), Member.id).where(condition, Member.status == "active")))
        award.members = int(db.session.scalar(sa.select(sa.func.count()).select_from(BulkAwardMember)
                                              .where(BulkAwardMember.award_id == award.id)) or 0)
        audit.record(actor, "bulk_award.create", "bulk_award", award.id, None, describe(award), now)
    return award


def _same_order_or_409(award: BulkAward, order: Order) -> BulkAward:
    same = (award.segment, award.points, award.reason, award.expires_at) == (
        order.segment, order.points, order.reason, order.expires_at)
    if not same:
        raise Conflict(f"Award number {order.award_no!r} was used for another award (id {award.id}); "
                       "use a new award number for a new award.", award_id=award.id)
    return award


def describe(award: BulkAward) -> dict[str, Any]:
    return audit.document(award, ("id", "award_no", "segment", "points", "reason", "expires_at", "members"))


def get_award(award_id: int) -> BulkAward:
    award = db.session.get(BulkAward, award_id)
    if award is None:
        raise NotFound(f"No bulk award with id {award_id}.")
    return award


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
