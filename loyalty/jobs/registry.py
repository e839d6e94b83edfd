"""The scheduled jobs, declared once: id, what it does, when it runs, and the function that does it.

Every job function takes the day it runs for (`as_of`, a local date) and an optional `progress`
callback (called with how many members a batch covered), and returns a dict of counts. The CLI
(`loyalty jobs run ID`) and, later, the scheduler run the same functions.
"""
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Job:
    id: str
    description: str
    cron: str  # minute hour day month day-of-week, in the deployment's time zone
    run: Callable
    total: Callable  # how many members a run covers (for the progress bar)


def _recompute_tiers(as_of, progress=None):
    from loyalty.tiers.service import recompute_tiers
    return recompute_tiers(as_of, progress=progress)


def _member_count():
    import sqlalchemy as sa

    from loyalty.extensions import db
    from loyalty.members.models import Member
    return db.session.scalar(sa.select(sa.func.count()).select_from(Member))


def _expire_referrals(as_of, progress=None):
    from loyalty.referrals.service import expire_referrals
    return expire_referrals(as_of, progress=progress)


def _pending_referrals():
    import sqlalchemy as sa

    from loyalty.extensions import db
    from loyalty.referrals.models import Referral
    return db.session.scalar(sa.select(sa.func.count()).select_from(Referral).where(Referral.status == "pending"))


def _deliver_webhooks(as_of, progress=None):
    from loyalty.webhooks.service import deliver_due
    return deliver_due(as_of, progress=progress)


def _due_deliveries():
    from loyalty.webhooks.service import due_count
    return due_count()


def _job(module, function):
    """A job function imported when it runs (the registry is read by the CLI at start-up)."""
    def run(as_of, progress=None):
        from importlib import import_module
        return getattr(import_module(f"loyalty.jobs.{module}"), function)(as_of, progress=progress)
    return run


JOBS = [
    Job("points.release_pending", "Pending points whose time has come become available (and pay debts first)",
        "5 0 * * *", _job("points_jobs", "release_pending"), _member_count),
    Job("points.expire", "Points past their expiry (the end of a local day) expire, one entry per lot",
        "10 0 * * *", _job("points_jobs", "expire_points"), _member_count),
    Job("points.expiry_reminders", "Members with points expiring within 30 days get one reminder per expiry day",
        "0 9 * * *", _job("points_jobs", "expiry_reminders"), _member_count),
    Job("members.lifecycle", "Lifecycle stages: potential, new, active, dormant, churned",
        "0 3 * * *", _job("member_jobs", "lifecycle"), _member_count),
    Job("members.birthday_bonus", "Members whose birthday it is get their tier's birthday points, once a year",
        "0 8 * * *", _job("member_jobs", "birthday_bonus"), _member_count),
    Job("members.value_segments", "Value segments: high value, potential, low value, at risk",
        "30 3 * * *", _job("member_jobs", "value_segments"), _member_count),
    Job("tiers.recompute", "Put every member in the tier their window earns; downgrades only after "
        "protection, one tier at a time", "30 2 * * *", _recompute_tiers, _member_count),
    Job("referrals.expire", "Pending referrals whose first-purchase deadline has passed expire",
        "15 2 * * *", _expire_referrals, _pending_referrals),
    Job("webhooks.deliver", "Webhook deliveries that are due are sent (signed), retried with back-off, dead "
        "after the last try", "* * * * *", _deliver_webhooks, _due_deliveries),
]


def get(job_id):
    for job in JOBS:
        if job.id == job_id:
            return job
    return None
