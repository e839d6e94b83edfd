"""Running a job once: take its lock, record the run, call the job, record how it ended.

The lock is a row per job in `job_locks` (it works the same on SQLite and PostgreSQL). A runner
holds it while it keeps its heartbeat fresh (every batch); a second runner finds it held and
stops without doing anything ("skipped"). A runner killed half-way stops beating, and after
LEASE the next run takes over; jobs are idempotent, so it finishes what was left."""
import os
import socket
import threading
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from loyalty import clock, settings_cache
from loyalty.database import transaction
from loyalty.extensions import db
from loyalty.jobs.models import JobLock, JobRun

LEASE = timedelta(minutes=10)


def runner_name():
    """Who holds a lock: host, process and thread (a scheduler may run jobs on several threads)."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def acquire(job_id, holder, now):
    """True if `holder` now holds the job's lock."""
    with transaction():
        # The lock's row, once per job ever; two runners creating it at once is no error.
        insert = postgresql.insert if db.session.get_bind().dialect.name == "postgresql" else sqlite.insert
        db.session.execute(insert(JobLock).values(job_id=job_id).on_conflict_do_nothing())
        taken = db.session.execute(
            sa.update(JobLock).where(JobLock.job_id == job_id, sa.or_(
                JobLock.holder.is_(None), JobLock.holder == holder, JobLock.heartbeat_at < now - LEASE))
            .values(holder=holder, acquired_at=now, heartbeat_at=now)
            .execution_options(synchronize_session=False))
    return taken.rowcount == 1


def heartbeat(job_id, holder):
    with transaction():
        db.session.execute(sa.update(JobLock).where(JobLock.job_id == job_id, JobLock.holder == holder)
                           .values(heartbeat_at=clock.now()).execution_options(synchronize_session=False))


def release(job_id, holder):
    with transaction():
        db.session.execute(sa.update(JobLock).where(JobLock.job_id == job_id, JobLock.holder == holder)
                           .values(holder=None).execution_options(synchronize_session=False))


def run(job, as_of, progress=None):
    """Run `job` for local day `as_of`. Returns the JobRun (outcome succeeded, failed or skipped).
    An exception in the job is recorded and raised again."""
    holder = runner_name()
    started = clock.now()
    if not acquire(job.id, holder, started):
        with transaction():
            record = JobRun(job_id=job.id, as_of=as_of, started_at=started, finished_at=started,
                            outcome="skipped", runner=holder,
                            error="Another runner holds this job's lock; nothing was done.")
            db.session.add(record)
        return record
    with transaction():
        record = JobRun(job_id=job.id, as_of=as_of, started_at=started, outcome="running", runner=holder)
        db.session.add(record)

    def beat(count):
        heartbeat(job.id, holder)
        settings_cache.renew()  # the next batch reads settings changed since, as the next request would
        if progress:
            progress(count)

    settings_cache.renew()
    try:
        summary = job.run(as_of, progress=beat)
    except BaseException as error:
        db.session.rollback()
        with transaction():
            record = db.session.get(JobRun, record.id)
            record.finished_at, record.outcome = clock.now(), "failed"
            record.error = f"{type(error).__name__}: {error}"[:2000]
        release(job.id, holder)
        raise
    with transaction():
        record = db.session.get(JobRun, record.id)
        record.finished_at, record.outcome, record.summary = clock.now(), "succeeded", summary
        record.rows = summary.get("rows", sum(value for key, value in summary.items()
                                               if isinstance(value, int) and key != "members"))
    release(job.id, holder)
    return record


def last_runs(limit_per_job=1):
    """{job id: its latest run}."""
    latest = sa.select(JobRun.job_id, sa.func.max(JobRun.id).label("id")).group_by(JobRun.job_id).subquery()
    rows = db.session.scalars(sa.select(JobRun).join(latest, latest.c.id == JobRun.id)).all()
    return {row.job_id: row for row in rows}


def recent_runs(job_id=None, limit=50, before=None):
    query = sa.select(JobRun).order_by(JobRun.id.desc())
    if job_id:
        query = query.where(JobRun.job_id == job_id)
    if before:
        query = query.where(JobRun.id < before)
    return db.session.scalars(query.limit(limit)).all()
