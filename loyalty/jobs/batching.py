"""What every set-based job shares: members in id ranges of BATCH, one transaction per range, and
the day a run acts for (never ahead of now). The jobs themselves live with their domains
(points/jobs.py, tiers/jobs.py, members/jobs.py, segments/jobs.py, referrals/jobs.py, webhooks/jobs.py); jobs/ keeps the registry, the runner,
this batching and the scheduler."""
import sqlalchemy as sa

from loyalty import clock
from loyalty.extensions import db
from loyalty.members.models import Member
from loyalty.config import settings

BATCH = 50_000


def day_cutoff(as_of, now):
    """The end of local day `as_of`, but never later than now: a job does not act ahead of time."""
    return min(now, clock.end_of_local_day(as_of, settings().timezone))


def id_ranges(batch):
    first, last = db.session.execute(sa.select(sa.func.min(Member.id), sa.func.max(Member.id))).one()
    db.session.rollback()
    if first is None:
        return
    for low in range(first, last + 1, batch):
        yield low, min(low + batch - 1, last)
