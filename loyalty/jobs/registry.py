"""The scheduled jobs, declared once: id, what it does, when it runs, and the function that does it.

Every job function takes the day it runs for (`as_of`, a local date) and an optional `progress`
callback (called with how many members a batch covered), and returns a dict of counts. The CLI
(`loyalty jobs run ID`) and, later, the scheduler run the same functions.
"""
from dataclasses import dataclass
from typing import Callable

import sqlalchemy as sa

from loyalty.bulk_awards import jobs as bulk_award_jobs
from loyalty.extensions import db
from loyalty.members import jobs as member_jobs
from loyalty.members.models import Member
from loyalty.points import jobs as points_jobs
from loyalty.points.models import PointsHold
from loyalty.referrals import jobs as referral_jobs
from loyalty.referrals.models import Referral
from loyalty.segments import jobs as segment_jobs
from loyalty.tiers import jobs as tier_jobs
from loyalty.webhooks import jobs as webhook_jobs


@dataclass(frozen=True)
class Job:
    id: str
    description: str
    cron: str  # minute hour day month day-of-week, in the deployment's time zone
    run: Callable
    total: Callable  # how many members a run covers (for the progress bar)


def _member_count():
    return db.session.scalar(sa.select(sa.func.count()).select_from(Member))


def _open_holds():
    return db.session.scalar(sa.select(sa.func.count()).select_from(PointsHold).where(PointsHold.status == "held"))


def _pending_referrals():
    return db.session.scalar(sa.select(sa.func.count()).select_from(Referral).where(Referral.status == "pending"))


JOBS = [
    Job("points.release_pending", "Pending points whose time has come become available (and pay debts first)",
        "5 0 * * *", points_jobs.release_pending, _member_count),
    Job("points.expire", "Points past their expiry (the end of a local day) expire, one entry per lot",
        "10 0 * * *", points_jobs.expire_points, _member_count),
    Job("points.release_holds", "Points holds past their expiry give their points back to the member",
        "* * * * *", points_jobs.release_holds, _open_holds),
    Job("points.expiry_reminders", "Members with points expiring within 30 days get one reminder per expiry day",
        "0 9 * * *", points_jobs.expiry_reminders, _member_count),
    Job("members.lifecycle", "Lifecycle stages: potential, new, active, dormant, churned",
        "0 3 * * *", segment_jobs.lifecycle, _member_count),
    Job("members.birthday_bonus", "Members whose birthday it is get their tier's birthday points, once a year",
        "0 8 * * *", member_jobs.birthday_bonus, _member_count),
    Job("members.value_segments", "Value segments: high value, potential, low value, at risk",
        "30 3 * * *", segment_jobs.value_segments, _member_count),
    Job("tiers.recompute", "Put every member in the tier their window earns; downgrades only after "
        "protection, one tier at a time", "30 2 * * *", tier_jobs.recompute_tiers, _member_count),
    Job("referrals.expire", "Pending referrals whose first-purchase deadline has passed expire",
        "15 2 * * *", referral_jobs.expire_referrals, _pending_referrals),
    Job("webhooks.deliver", "Webhook deliveries that are due are sent (signed), retried with back-off, dead "
        "after the last try", "* * * * *", webhook_jobs.deliver_due, webhook_jobs.due_count),
    Job("reports.fold_figures", "The report figures' running sums collapse to one row per key (the figures stay "
        "the same)", "* * * * *", segment_jobs.fold_figures, lambda: 0),
    Job("bulk_awards.run", "Queued bulk awards credit their segment's members (as queued), each exactly once",
        "* * * * *", bulk_award_jobs.run_awards, bulk_award_jobs.due_members),
]


def get(job_id):
    for job in JOBS:
        if job.id == job_id:
            return job
    return None
