"""What the jobs keep: a record of every run, a lock per job, and the notifications they queue."""
import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from loyalty.database import BigId, UTCDateTime
from loyalty.extensions import Model


class JobRun(Model):
    __tablename__ = "job_runs"
    __table_args__ = (sa.Index("ix_job_runs_job", "job_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[str] = mapped_column(sa.String(50))
    as_of: Mapped[sa.Date] = mapped_column(sa.Date)
    started_at = mapped_column(UTCDateTime, nullable=False)
    finished_at = mapped_column(UTCDateTime)
    rows: Mapped[int | None] = mapped_column(sa.BigInteger)  # rows touched
    outcome: Mapped[str] = mapped_column(sa.String(10))  # running | succeeded | failed | skipped
    summary = mapped_column(sa.JSON)
    error: Mapped[str | None] = mapped_column(sa.String(2000))
    runner: Mapped[str] = mapped_column(sa.String(100))  # host:pid


class JobLock(Model):
    """One row per job. A runner holds it while `heartbeat_at` is fresh; a runner killed half-way
    leaves a stale heartbeat, and the next run takes the lock over."""

    __tablename__ = "job_locks"

    job_id: Mapped[str] = mapped_column(sa.String(50), primary_key=True)
    holder: Mapped[str | None] = mapped_column(sa.String(100))
    acquired_at = mapped_column(UTCDateTime)
    heartbeat_at = mapped_column(UTCDateTime)


class Notification(Model):
    """A message to deliver to a member (by whatever channel the deployment uses); `dedupe_key`
    makes a job that queues it again for the same reason a no-op."""

    __tablename__ = "notifications"
    __table_args__ = (sa.UniqueConstraint("member_id", "kind", "dedupe_key"),
                      sa.Index("ix_notifications_unsent", "sent_at", "id"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id"))
    kind: Mapped[str] = mapped_column(sa.String(30))
    dedupe_key: Mapped[str] = mapped_column(sa.String(60))
    payload = mapped_column(sa.JSON, nullable=False)
    created_at = mapped_column(UTCDateTime, nullable=False)
    sent_at = mapped_column(UTCDateTime)
