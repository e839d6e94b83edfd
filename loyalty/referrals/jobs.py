"""Referrals' nightly job: pending referrals whose first-purchase deadline has passed expire."""
import sqlalchemy as sa

from loyalty import clock
from loyalty.config import settings
from loyalty.database import transaction
from loyalty.extensions import db
from loyalty.referrals.models import Referral


def expire_referrals(as_of, progress=None, now=None):
    """Pending referrals whose deadline passed by the end of local day `as_of` expire. One UPDATE."""
    now = now or clock.now()
    cutoff = min(now, clock.end_of_local_day(as_of, settings().timezone))
    with transaction():
        result = db.session.execute(
            sa.update(Referral).where(Referral.status == "pending", Referral.deadline < cutoff)
            .values(status="expired", settled_at=now).execution_options(synchronize_session=False))
    if progress:
        progress(result.rowcount)
    return {"expired": result.rowcount}
