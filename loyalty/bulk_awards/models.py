"""A bulk award (marketing's order) and its members, frozen when it was queued."""
import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from loyalty.database import BigId, Points, UTCDateTime
from loyalty.extensions import Model


class BulkAward(Model):
    __tablename__ = "bulk_awards"
    __table_args__ = (sa.Index("ix_bulk_awards_status", "status", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    award_no: Mapped[str] = mapped_column(sa.String(64), unique=True)  # the client's key: once per number
    segment: Mapped[str] = mapped_column(sa.String(80))
    points = mapped_column(Points(), nullable=False)  # each member's
    reason: Mapped[str] = mapped_column(sa.String(200))
    expires_at = mapped_column(UTCDateTime)
    # queued -> running -> done. A run that raises puts it back to queued with the error, to be tried
    # again from `retry_at` (back-off), until MAX_ATTEMPTS runs have failed: then failed, which no run
    # takes up (an operator may retry it). Cancelled (`cancelled_at`) is failed too, for good: what was
    # credited stays credited, nobody else is.
    status: Mapped[str] = mapped_column(sa.String(10))
    members: Mapped[int] = mapped_column(sa.Integer)  # frozen at queue time
    awarded: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    points_awarded = mapped_column(Points(), nullable=False, server_default=sa.text("0"))
    actor: Mapped[str] = mapped_column(sa.String(150))
    error: Mapped[str | None] = mapped_column(sa.String(2000))  # the last failed run's, or the cancellation
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")  # runs that failed
    retry_at = mapped_column(UTCDateTime)  # a queued award after a failed run waits until then
    cancelled_at = mapped_column(UTCDateTime)
    created_at = mapped_column(UTCDateTime, nullable=False)
    started_at = mapped_column(UTCDateTime)
    finished_at = mapped_column(UTCDateTime)


class BulkAwardMember(Model):
    """One member of a bulk award; `awarded_at` is set in the transaction that credits them, so a
    job killed half-way and run again credits each member exactly once."""

    __tablename__ = "bulk_award_members"

    award_id: Mapped[int] = mapped_column(sa.ForeignKey("bulk_awards.id"), primary_key=True)
    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id"), primary_key=True)
    awarded_at = mapped_column(UTCDateTime)
