"""Bulk awards: marketing queues points for every member of a segment; the `bulk_awards.run` job
credits them.

Queuing freezes the segment: its member ids are copied into `bulk_award_members` by one
INSERT ... SELECT in the queuing transaction, so members who join or leave the segment afterwards
change nothing. The job credits them in ranges of member ids, one transaction per range, with the
set-based `ledger.credit_many` (one statement per table, no query per member) and marks the range's
members awarded in the same transaction: a job killed half-way and run again credits each member
exactly once. Idempotent on `award_no`: the same number again answers the award queued first."""
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from loyalty import audit, clock
from loyalty.bulk_awards.models import BulkAward, BulkAwardMember
from loyalty.database import transaction
from loyalty.errors import Conflict, NotFound, ValidationFailed
from loyalty.extensions import db
from loyalty.members.models import Member
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
