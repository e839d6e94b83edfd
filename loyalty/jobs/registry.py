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


JOBS = [
    Job("tiers.recompute", "Put every member in the tier their window earns; downgrades only after "
        "protection, one tier at a time", "30 2 * * *", _recompute_tiers, _member_count),
    Job("referrals.expire", "Pending referrals whose first-purchase deadline has passed expire",
        "15 2 * * *", _expire_referrals, _pending_referrals),
]


def get(job_id):
    for job in JOBS:
        if job.id == job_id:
            return job
    return None
