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
RUNNABLE = ("queued", "running")  # running: a run killed half-way, taken up where it stopped


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
                          awarded=0, points_awarded=Decimal("0.00"), actor=actor, created_at=now, attempts=0)
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


def cancel_award(award_id: int, reason: str, actor: str, now: datetime | None = None) -> BulkAward:
    """Stop an award that is not done: no member is credited after this; those credited keep their
    points (a range being credited when the cancel comes is finished first: the award's lock).
    Cancelling it again answers the same award; a done award cannot be cancelled (409)."""
    now = now or clock.now()
    reason = (reason or "").strip()
    if not reason:
        raise ValidationFailed("Say why the award is cancelled (a reason); it goes to the audit log.",
                               errors={"reason": ["Must not be blank."]})
    with transaction():
        award = _locked(award_id)
        if award.cancelled_at is not None:
            return award
        if award.status == "done":
            raise Conflict(f"Bulk award {award.id} is done: all {award.awarded} members were credited, so there is "
                           "nothing left to cancel. To take points back, adjust the members' points.",
                           award_id=award.id)
        before = describe_run(award)
        award.status, award.cancelled_at, award.finished_at, award.retry_at = "failed", now, now, None
        award.error = (f"Cancelled by {actor}: {reason} ({award.awarded} of {award.members} members had been "
                       "credited and keep their points)")[:2000]
        audit.record(actor, "bulk_award.cancel", "bulk_award", award.id, before, describe_run(award), now)
    return award


def retry_award(award_id: int, actor: str, now: datetime | None = None) -> BulkAward:
    """Queue again an award that failed its last attempt (after its cause is fixed), with all its
    attempts back; the members already credited are not credited again."""
    now = now or clock.now()
    with transaction():
        award = _locked(award_id)
        if award.status != "failed" or award.cancelled_at is not None:
            state = "cancelled" if award.cancelled_at is not None else award.status
            raise Conflict(f"Bulk award {award.id} is {state}; only an award that failed (not a cancelled one) can "
                           "be retried.", award_id=award.id)
        before = describe_run(award)
        award.status, award.attempts, award.retry_at, award.finished_at = "queued", 0, None, None
        audit.record(actor, "bulk_award.retry", "bulk_award", award.id, before, describe_run(award), now)
    return award


def describe_run(award: BulkAward) -> dict[str, Any]:
    return audit.document(award, ("status", "awarded", "attempts", "error", "cancelled_at"))


AWARD_LOCK_CLASS = 0x42A1  # this module's advisory locks: (class, award id)


def hold_award(award_id: int) -> None:
    """The award's lock for this transaction, taken by each range the job credits and by a cancel.
    An advisory lock (PostgreSQL; SQLite runs one writer at a time): its waiters queue first come,
    first served, so a cancel waiting for the range in flight is served before the job's next range.
    A row lock (FOR UPDATE) is not fair so: the next range, asking while the cancel was being woken,
    could take the row first, again and again."""
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(sa.text("SELECT pg_advisory_xact_lock(:class, :award)"),
                           {"class": AWARD_LOCK_CLASS, "award": award_id % 2**31})


def _locked(award_id: int) -> BulkAward:
    hold_award(award_id)
    award = db.session.scalar(sa.select(BulkAward).where(BulkAward.id == award_id).with_for_update())
    if award is None:
        raise NotFound(f"No bulk award with id {award_id}.")
    return award


def recent_awards(limit: int = 20) -> list[BulkAward]:
    """The awards not done (oldest first), then the latest done, up to `limit` (the console's list)."""
    open_awards = list(db.session.scalars(sa.select(BulkAward).where(BulkAward.status != "done")
                                          .order_by(BulkAward.id).limit(limit)))
    done = list(db.session.scalars(sa.select(BulkAward).where(BulkAward.status == "done")
                                   .order_by(BulkAward.id.desc()).limit(max(limit - len(open_awards), 0))))
    return open_awards + done
